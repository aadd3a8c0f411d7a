#!/usr/bin/env bash
# Run one umr-jax command on every worker of a TPU VM or pod slice at once, and stream the logs.
#
#   tpu/run.sh NAME ZONE [--log-dir DIR] -- COMMAND [ARG...]
#   tpu/run.sh umr-v4-64 us-central2-b -- umr-jax train --config configs/umr_xor_retrieve.py \
#       runtime.train.mesh=data=2,fsdp=-1,model=1 runtime.train.rules=fsdp output_dir=gs://BUCKET/runs/it0
#
# Every worker runs the same command in ~/umr-jax-run with ~/umr-jax-venv active. On TPU VMs
# jax.distributed.initialize() finds the other hosts by itself, so no --coordinator,
# --num-processes or --process-id is needed. Each worker's output is written to
# DIR/worker-N.log (default logs/tpu/NAME-DATE-TIME/) and echoed here prefixed with [worker N].
# The exit status is 0 only if every worker's command succeeded.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"

USAGE="usage: tpu/run.sh NAME ZONE [--log-dir DIR] -- COMMAND [ARG...]"
[ "$#" -ge 2 ] || usage_error "$USAGE"
name=$1
zone=$2
shift 2
check_name_and_zone "$name" "$zone"
log_dir="logs/tpu/$name-$(date +%Y%m%d-%H%M%S)"
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  case "$1" in
    --log-dir)
      [ "$#" -ge 2 ] || usage_error "$USAGE"
      log_dir=$2
      shift 2
      ;;
    *) usage_error "$USAGE" ;;
  esac
done
[ "$#" -ge 2 ] || usage_error "$USAGE"
shift # the --
require_gcloud

command_line=$(printf '%q ' "$@")
remote="mkdir -p $REMOTE_RUN && cd $REMOTE_RUN && source $REMOTE_VENV/bin/activate && PYTHONUNBUFFERED=1 exec $command_line"
workers=$(worker_count "$name" "$zone")
mkdir -p "$log_dir"
echo "running on $workers worker(s) of $name: $command_line" >&2
echo "logs: $log_dir/worker-N.log" >&2

pids=()
stop_workers() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
}
trap 'stop_workers; exit 130' INT TERM

for ((worker = 0; worker < workers; worker++)); do
  (
    tpu_ssh "$name" "$zone" "$worker" "$remote" 2>&1 | tee "$log_dir/worker-$worker.log" |
      while IFS= read -r line; do printf '[worker %d] %s\n' "$worker" "$line"; done
  ) &
  pids+=("$!")
done

failed=()
for worker in "${!pids[@]}"; do
  if ! wait "${pids[$worker]}"; then
    failed+=("$worker")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  die "the command failed on worker(s) ${failed[*]}; see $log_dir/worker-N.log"
fi
echo "done on all $workers worker(s); logs in $log_dir" >&2
