#!/usr/bin/env bash
# Create a Cloud TPU VM or pod slice.
#
#   tpu/create.sh NAME ZONE ACCELERATOR_TYPE [VERSION]
#   tpu/create.sh umr-v4-8 us-central2-b v4-8
#   TPU_SPOT=1 tpu/create.sh umr-v5e us-west4-a v5litepod-16
#
# VERSION (the TPU software image) defaults by generation: tpu-ubuntu2204-base (v2, v3, v4),
# v2-alpha-tpuv5-lite (v5e), v2-alpha-tpuv5 (v5p), v2-alpha-tpuv6e (v6e).
# TPU_SPOT=1 asks for Spot capacity (cheaper, preemptible).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"

USAGE="usage: tpu/create.sh NAME ZONE ACCELERATOR_TYPE [VERSION]"
if [ "$#" -lt 3 ] || [ "$#" -gt 4 ]; then usage_error "$USAGE"; fi
name=$1
zone=$2
accelerator=$3
version=${4:-}
check_name_and_zone "$name" "$zone"

if [ -z "$version" ]; then
  case "$accelerator" in
    v2-* | v3-* | v4-*) version=tpu-ubuntu2204-base ;;
    v5litepod-* | v5e-*) version=v2-alpha-tpuv5-lite ;;
    v5p-*) version=v2-alpha-tpuv5 ;;
    v6e-*) version=v2-alpha-tpuv6e ;;
    *) die "no default software version for accelerator type '$accelerator'; give VERSION" ;;
  esac
fi

require_gcloud
flags=(--zone="$zone" --accelerator-type="$accelerator" --version="$version")
if [ "${TPU_SPOT:-0}" = 1 ]; then
  flags+=(--spot)
fi
echo "creating TPU $name ($accelerator, $version) in $zone" >&2
tpu_vm create "$name" "${flags[@]}"
echo "next: tpu/setup.sh $name $zone" >&2
