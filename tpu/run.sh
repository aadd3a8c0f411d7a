#!/usr/bin/env bash
# Run one umr-jax command on every worker of every slice at once, and stream the logs.
#
#   tpu/run.sh NAME ZONE [--slices N] [--log-dir DIR] -- COMMAND [ARG...]
#   tpu/run.sh umr-v4-64 us-central2-b -- umr-jax train --config configs/umr_xor_retrieve.py \
#       runtime.train.mesh=data=2,fsdp=-1,model=1 runtime.train.rules=fsdp output_dir=gs://BUCKET/runs/it0
#
# Every worker runs the same command in ~/umr-jax (the checkout tpu/setup.sh put there, so
# configs/... resolves) with ~/umr-jax-venv active. On TPU VMs jax.distributed.initialize()
# finds the other hosts, and on a Multislice queued resource the other slices, by itself, so no
# --coordinator, --num-processes or --process-id is needed. With --slices N the command runs on
# every worker of the nodes NAME-0 ... NAME-(N-1). Each worker's output is written to
# DIR/worker-W.log (DIR/slice-S-worker-W.log with several slices; default DIR:
# logs/tpu/NAME-DATE-TIME/) and echoed here prefixed with [worker W] ([slice S worker W]).
# The exit status is 0 only if every worker's command succeeded.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"

USAGE="usage: tpu/run.sh NAME ZONE [--slices N] [--log-dir DIR] -- COMMAND [ARG...]"
[ "$#" -ge 2 ] || usage_error "$USAGE"
name=$1
zone=$2
shift 2
check_name_and_zone "$name" "$zone"
log_dir="logs/tpu/$name-$(date +%Y%m%d-%H%M%S)"
slices=1
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  case "$1" in
    --log-dir | --slices)
      [ "$#" -ge 2 ] || usage_error "$USAGE"
      if [ "$1" = --log-dir ]; then log_dir=$2; else slices=$2; fi
      shift 2
      ;;
    *) usage_error "$USAGE" ;;
  esac
done
[ "$#" -ge 2 ] || usage_error "$USAGE"
shift # the --
check_count --slices "$slices"
slice_nodes "$name" "$slices"
if [ -n "${TPU_NUM_WORKERS:-}" ]; then check_count TPU_NUM_WORKERS "$TPU_NUM_WORKERS"; fi
require_gcloud

command_line=$(printf '%q ' "$@")
remote="cd $REMOTE_REPO && source $REMOTE_VENV/bin/activate && PYTHONUNBUFFERED=1 exec $command_line"
counts=()
total=0
for node in "${NODES[@]}"; do
  count=$(worker_count "$node" "$zone")
  counts+=("$count")
  total=$((total + count))
done
mkdir -p "$log_dir"
echo "running on $total worker(s) of ${NODES[*]}: $command_line" >&2
echo "logs: $log_dir/" >&2

pids=()
labels=()
stop_workers() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
}
trap 'stop_workers; exit 130' INT TERM

for i in "${!NODES[@]}"; do
  for ((worker = 0; worker < counts[i]; worker++)); do
    label="$(slice_label "$slices" "$i")worker $worker"
    log="$log_dir/${label// /-}.log"
    (
      tpu_ssh "${NODES[$i]}" "$zone" "$worker" "$remote" 2>&1 | tee "$log" |
        while IFS= read -r line; do printf '[%s] %s\n' "$label" "$line"; done
    ) &
    pids+=("$!")
    labels+=("$label")
  done
done

failed=()
for j in "${!pids[@]}"; do
  if ! wait "${pids[$j]}"; then
    failed+=("${labels[$j]}")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  die "the command failed on $(printf '%s, ' "${failed[@]}" | sed 's/, $//'); see $log_dir/"
fi
echo "done on all $total worker(s); logs in $log_dir" >&2
