#!/usr/bin/env bash
# Delete a Cloud TPU VM or pod slice (and stop paying for it).
#
#   tpu/delete.sh NAME ZONE
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"

[ "$#" -eq 2 ] || usage_error "usage: tpu/delete.sh NAME ZONE"
check_name_and_zone "$1" "$2"
require_gcloud
tpu_vm delete "$1" --zone="$2" --quiet
