#!/usr/bin/env bash
# Copy a run's outputs from the TPU workers to a Cloud Storage bucket.
#
#   tpu/copy_results.sh NAME ZONE RUN_PATH gs://BUCKET/PATH [WORKER | all]
#   tpu/copy_results.sh umr-v4-64 us-central2-b runs/scaling gs://my-bucket/umr/scaling
#
# RUN_PATH is a folder on the workers, relative to ~/umr-jax-run (where run.sh runs commands)
# unless absolute. By default it is synced from worker 0 (process 0 writes reports, exports
# and study results); 'all' syncs every worker's copy to gs://BUCKET/PATH/worker-N. The sync
# uses 'gcloud storage rsync' on the worker (the TPU VM's service account needs write access
# to the bucket), so running it again only copies what changed.
# Checkpoints are best written to gs:// directly (output_dir=gs://...); Orbax handles it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"

USAGE="usage: tpu/copy_results.sh NAME ZONE RUN_PATH gs://BUCKET/PATH [WORKER | all]"
if [ "$#" -lt 4 ] || [ "$#" -gt 5 ]; then usage_error "$USAGE"; fi
name=$1
zone=$2
run_path=$3
destination=${4%/}
which=${5:-0}
check_name_and_zone "$name" "$zone"
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
require_gcloud

sync_from() { # sync_from WORKER DESTINATION
  local remote
  remote="cd $REMOTE_RUN && gcloud storage rsync --recursive $(printf '%q' "$run_path") $(printf '%q' "$2")"
  echo "worker $1: $run_path -> $2" >&2
  tpu_ssh "$name" "$zone" "$1" "$remote"
}

if [ "$which" = all ]; then
  workers=$(worker_count "$name" "$zone")
  for ((worker = 0; worker < workers; worker++)); do
    sync_from "$worker" "$destination/worker-$worker"
  done
else
  sync_from "$which" "$destination"
fi
