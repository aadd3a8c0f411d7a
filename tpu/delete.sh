#!/usr/bin/env bash
# Delete a queued resource and its TPU VMs (every slice), and stop paying for them.
#
#   tpu/delete.sh NAME ZONE [--direct]
#
# 'gcloud compute tpus queued-resources delete NAME --force' deletes the nodes first, then the
# request, whatever its state. --direct deletes a TPU VM made with tpu/create.sh --direct.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"

USAGE="usage: tpu/delete.sh NAME ZONE [--direct]"
if [ "$#" -lt 2 ] || [ "$#" -gt 3 ]; then usage_error "$USAGE"; fi
direct=0
if [ "$#" -eq 3 ]; then
  [ "$3" = --direct ] || usage_error "$USAGE"
  direct=1
fi
check_name_and_zone "$1" "$2"
require_gcloud
if [ "$direct" = 1 ]; then
  tpu_vm delete "$1" --zone="$2" --quiet
else
  queued_resources delete "$1" --zone="$2" --force --quiet
fi
