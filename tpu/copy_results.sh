#!/usr/bin/env bash
# Copy a run's outputs from the TPU workers to a Cloud Storage bucket.
#
#   tpu/copy_results.sh NAME ZONE RUN_PATH gs://BUCKET/PATH [WORKER | all] [--slices N]
#   tpu/copy_results.sh umr-v4-64 us-central2-b runs/scaling gs://my-bucket/umr/scaling
#
# RUN_PATH is a folder on the workers, relative to ~/umr-jax (where run.sh runs commands) unless
# absolute. By default it is synced from worker 0 (of slice 0: process 0 writes reports, exports
# and study results); 'all' syncs every worker's copy to gs://BUCKET/PATH/worker-W (with
# --slices N: gs://BUCKET/PATH/slice-S-worker-W). The sync uses 'gcloud storage rsync' on the
# worker (the TPU VM's service account needs write access to the bucket), so running it again
# only copies what changed. Better still, give jobs gs:// outputs and skip this step.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"

USAGE="usage: tpu/copy_results.sh NAME ZONE RUN_PATH gs://BUCKET/PATH [WORKER | all] [--slices N]"
positional=()
slices=1
while [ "$#" -gt 0 ]; do
  if [ "$1" = --slices ]; then
    [ "$#" -ge 2 ] || usage_error "$USAGE"
    slices=$2
    shift 2
  else
    positional+=("$1")
    shift
  fi
done
if [ "${#positional[@]}" -lt 4 ] || [ "${#positional[@]}" -gt 5 ]; then usage_error "$USAGE"; fi
name=${positional[0]}
zone=${positional[1]}
run_path=${positional[2]}
destination=${positional[3]%/}
which=${positional[4]:-0}
check_name_and_zone "$name" "$zone"
check_count --slices "$slices"
slice_nodes "$name" "$slices"
case "$destination" in
  gs://?*) ;;
  *) usage_error "destination must be gs://BUCKET/PATH, got '$destination'" ;;
esac
# It reaches 'gcloud storage rsync' on the worker as an argument: a leading '-' would be a flag.
case "$run_path" in
  -*) usage_error "$(basename "$0"): error: RUN_PATH must not start with '-' (write ./$run_path), got '$run_path'" ;;
esac
[[ $which == all || $which =~ ^(0|[1-9][0-9]{0,3})$ ]] ||
  usage_error "$(basename "$0"): error: WORKER must be a worker number or 'all', got '$which'"
if [ -n "${TPU_NUM_WORKERS:-}" ]; then check_count TPU_NUM_WORKERS "$TPU_NUM_WORKERS"; fi
require_gcloud

sync_from() { # sync_from NODE WORKER DESTINATION
  local remote
  remote="cd $REMOTE_REPO && gcloud storage rsync --recursive $(printf '%q' "$run_path") $(printf '%q' "$3")"
  echo "$1 worker $2: $run_path -> $3" >&2
  tpu_ssh "$1" "$zone" "$2" "$remote"
}

if [ "$which" = all ]; then
  for i in "${!NODES[@]}"; do
    workers=$(worker_count "${NODES[$i]}" "$zone")
    label=$(slice_label "$slices" "$i")
    for ((worker = 0; worker < workers; worker++)); do
      sync_from "${NODES[$i]}" "$worker" "$destination/${label// /-}worker-$worker"
    done
  done
else
  sync_from "${NODES[0]}" "$which" "$destination"
fi
