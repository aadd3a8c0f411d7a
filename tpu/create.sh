#!/usr/bin/env bash
# Ask for a Cloud TPU slice, or several (Multislice), as a queued resource.
#
#   tpu/create.sh NAME ZONE ACCELERATOR_TYPE [--slices N] [--version VERSION] [--spot | --reserved]
#                 [--data-disk DISK] [--data-disk-mode read-only | read-write] [--direct]
#   tpu/create.sh umr-v4-8 us-central2-b v4-8
#   tpu/create.sh umr-v5e us-west4-a v5litepod-16 --slices 2 --spot
#
# The request is 'gcloud compute tpus queued-resources create NAME': one slice is the TPU VM node
# NAME (--node-id), N slices are the nodes NAME-0 ... NAME-(N-1) (--node-count, --node-prefix),
# which Multislice needs. The request waits in a queue until the capacity is there; follow it
# with tpu/wait.sh NAME ZONE.
#
# --version    the TPU software (runtime) version; by default by generation: tpu-ubuntu2204-base
#              (v2, v3, v4), v2-alpha-tpuv5-lite (v5e), v2-alpha-tpuv5 (v5p), v2-alpha-tpuv6e (v6e)
# --spot       Spot capacity (cheaper, preemptible); --reserved: your project's reservation
# --data-disk  an existing Persistent Disk or Hyperdisk attached to every worker: the full path
#              projects/P/zones/Z/disks/D, or the disk's name with TPU_PROJECT set; mounted by
#              tpu/setup.sh --data-disk MOUNT. --data-disk-mode: read-only (default; the only mode a
#              disk shared by several workers can have) or read-write (single-host slices only)
# --direct     one slice made at once with 'gcloud compute tpus tpu-vm create' (no queue: it
#              fails when the zone has no capacity); delete it with tpu/delete.sh --direct
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"

USAGE="usage: tpu/create.sh NAME ZONE ACCELERATOR_TYPE [--slices N] [--version VERSION] [--spot | --reserved] [--data-disk DISK] [--data-disk-mode read-only | read-write] [--direct]"
[ "$#" -ge 3 ] || usage_error "$USAGE"
name=$1
zone=$2
accelerator=$3
shift 3
slices=1 version="" tier="" disk="" disk_mode=read-only direct=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    --slices | --version | --data-disk | --data-disk-mode)
      [ "$#" -ge 2 ] || usage_error "$USAGE"
      case "$1" in
        --slices) slices=$2 ;;
        --version) version=$2 ;;
        --data-disk) disk=$2 ;;
        --data-disk-mode) disk_mode=$2 ;;
      esac
      shift 2
      ;;
    --spot | --reserved)
      [ -z "$tier" ] || usage_error "$(basename "$0"): error: give one of --spot and --reserved"
      tier=$1
      shift
      ;;
    --direct)
      direct=1
      shift
      ;;
    *) usage_error "$USAGE" ;;
  esac
done
check_name_and_zone "$name" "$zone"
check_count --slices "$slices"
slice_nodes "$name" "$slices"
[[ $accelerator =~ ^v[0-9]+[a-z]*-[0-9]+$ ]] ||
  usage_error "$(basename "$0"): error: ACCELERATOR_TYPE must look like v4-8, v5litepod-16 or v6e-8, got '$accelerator'"
case "$disk_mode" in
  read-only | read-write) ;;
  *) usage_error "$(basename "$0"): error: --data-disk-mode must be read-only or read-write, got '$disk_mode'" ;;
esac
if [ -n "$disk" ]; then
  if [[ $disk =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]]; then
    [ -n "${TPU_PROJECT:-}" ] ||
      usage_error "$(basename "$0"): error: --data-disk $disk: give the full path projects/PROJECT/zones/$zone/disks/$disk, or set TPU_PROJECT"
    disk="projects/$TPU_PROJECT/zones/$zone/disks/$disk"
  fi
  [[ $disk =~ ^projects/[^/,=]+/zones/[^/,=]+/disks/[^/,=]+$ ]] ||
    usage_error "$(basename "$0"): error: --data-disk must be a disk name or projects/PROJECT/zones/ZONE/disks/DISK, got '$disk'"
  if [ "$disk_mode" = read-write ] && [ "$slices" -gt 1 ]; then
    usage_error "$(basename "$0"): error: a read-write data disk attaches to one host only; use read-only with --slices $slices"
  fi
fi
if [ "$direct" = 1 ] && [ "$slices" -gt 1 ]; then
  usage_error "$(basename "$0"): error: --direct makes one slice; Multislice (--slices $slices) needs a queued resource"
fi

if [ -z "$version" ]; then
  case "$accelerator" in
    v2-* | v3-* | v4-*) version=tpu-ubuntu2204-base ;;
    v5litepod-* | v5e-*) version=v2-alpha-tpuv5-lite ;;
    v5p-*) version=v2-alpha-tpuv5 ;;
    v6e-*) version=v2-alpha-tpuv6e ;;
    *) die "no default software version for accelerator type '$accelerator'; give --version" ;;
  esac
fi

require_gcloud
flags=(--zone="$zone" --accelerator-type="$accelerator")
if [ "$direct" = 1 ]; then
  flags+=(--version="$version")
else
  flags+=(--runtime-version="$version")
  if [ "$slices" -gt 1 ]; then
    flags+=(--node-count="$slices" --node-prefix="$name")
  else
    flags+=(--node-id="$name")
  fi
fi
if [ -n "$tier" ]; then
  flags+=("$tier")
fi
if [ -n "$disk" ]; then
  flags+=(--data-disk="source=$disk,mode=$disk_mode")
fi

if [ "$direct" = 1 ]; then
  echo "creating TPU $name ($accelerator, $version) in $zone" >&2
  tpu_vm create "$name" "${flags[@]}"
  echo "next: tpu/setup.sh $name $zone" >&2
else
  echo "requesting $slices x $accelerator ($version) in $zone as queued resource $name (nodes: ${NODES[*]})" >&2
  queued_resources create "$name" "${flags[@]}"
  slices_flag=""
  if [ "$slices" -gt 1 ]; then slices_flag=" --slices $slices"; fi
  echo "next: tpu/wait.sh $name $zone, then tpu/setup.sh $name $zone$slices_flag" >&2
fi
