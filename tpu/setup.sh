#!/usr/bin/env bash
# Install umr-jax with TPU support on every worker of every slice, and mount data storage.
#
#   tpu/setup.sh NAME ZONE [--slices N] [--source LOCAL_CHECKOUT | GIT_URL] [--data-disk MOUNT]
#                [--gcsfuse BUCKET[/PREFIX]:MOUNT]
#   tpu/setup.sh umr-v4-8 us-central2-b                                   # this checkout
#   tpu/setup.sh umr-v5e us-west4-a --slices 2 --gcsfuse my-bucket:/mnt/gcs
#   tpu/setup.sh umr-v4-8 us-central2-b --source https://github.com/ORG/umr-jax.git --data-disk /mnt/data
#
# --source     a local checkout (default: the one holding this script; copied to every worker
#              without .git, virtual environments or run outputs) or a git URL (cloned on every
#              worker; a second setup fetches and resets to the remote's head). Either way the
#              checkout lands in ~/umr-jax, where tpu/run.sh runs commands, so configs/ is there;
#              runs/ and logs/ in it survive a second setup.
# --data-disk  mount the disk that tpu/create.sh --data-disk attached (/dev/sdb, or
#              TPU_DATA_DISK_DEVICE) at MOUNT on every worker: read-only when attached read-only,
#              else formatted (ext4) when blank and mounted read-write
# --gcsfuse    install Cloud Storage FUSE (gcsfuse, from Google's apt repository) and mount the
#              bucket (only PREFIX in it, if given) at MOUNT on every worker; the TPU VM's service
#              account needs access to the bucket
# --slices     the queued resource has N slices (tpu/create.sh --slices N): set up all of them
# On every worker: Python 3.11 (from apt when the image lacks it), ~/umr-jax-venv,
# 'pip install -e "~/umr-jax[tpu]"' (jax[tpu] from PyPI), and a check that JAX sees the TPU chips.
# All workers of all slices run the check at once: a multi-host JAX job starts only when every
# host does.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"

USAGE="usage: tpu/setup.sh NAME ZONE [--slices N] [--source LOCAL_CHECKOUT | GIT_URL] [--data-disk MOUNT] [--gcsfuse BUCKET[/PREFIX]:MOUNT]"
[ "$#" -ge 2 ] || usage_error "$USAGE"
name=$1
zone=$2
shift 2
slices=1 source_spec="" data_mount="" gcsfuse_spec=""
while [ "$#" -gt 0 ]; do
  [ "$#" -ge 2 ] || usage_error "$USAGE"
  case "$1" in
    --slices) slices=$2 ;;
    --source) source_spec=$2 ;;
    --data-disk) data_mount=$2 ;;
    --gcsfuse) gcsfuse_spec=$2 ;;
    *) usage_error "$USAGE" ;;
  esac
  shift 2
done
check_name_and_zone "$name" "$zone"
check_count --slices "$slices"
slice_nodes "$name" "$slices"
source_spec=${source_spec:-$(cd "$(dirname "$0")/.." && pwd)}

# check_mount_point WHAT PATH: an absolute path of plain characters (it reaches sudo and mount).
check_mount_point() {
  [[ $2 =~ ^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$ && ! $2 =~ (^|/)\.\.?(/|$) ]] ||
    usage_error "$(basename "$0"): error: $1 mount point must be an absolute path such as /mnt/data, got '$2'"
}

mount_steps=""
if [ -n "$data_mount" ]; then
  check_mount_point --data-disk "$data_mount"
  device=${TPU_DATA_DISK_DEVICE:-/dev/sdb}
  [[ $device =~ ^/dev/[A-Za-z0-9/_-]+$ ]] ||
    usage_error "$(basename "$0"): error: TPU_DATA_DISK_DEVICE must be a /dev/ path, got '$device'"
  mount_steps+="
if ! mountpoint -q $data_mount; then
  read_only=\$(lsblk -dno RO $device) || { echo \"no data disk at $device: attach one with tpu/create.sh --data-disk\" >&2; exit 1; }
  sudo mkdir -p $data_mount
  if [ \"\$read_only\" = 1 ]; then
    sudo mount -o ro,noload $device $data_mount
  else
    sudo blkid $device >/dev/null || sudo mkfs.ext4 -m 0 -E lazy_itable_init=0,lazy_journal_init=0,discard $device
    sudo mount -o discard,defaults $device $data_mount
    sudo chown \"\$(id -u):\$(id -g)\" $data_mount
  fi
fi"
fi
if [ -n "$gcsfuse_spec" ]; then
  spec=${gcsfuse_spec#gs://}
  [[ $spec == *:/* ]] || usage_error "$(basename "$0"): error: --gcsfuse must be BUCKET[/PREFIX]:MOUNT, got '$gcsfuse_spec'"
  bucket_path=${spec%:*}
  gcs_mount=${spec##*:}
  check_mount_point --gcsfuse "$gcs_mount"
  bucket=${bucket_path%%/*}
  prefix=${bucket_path#"$bucket"}
  prefix=${prefix#/}
  prefix=${prefix%/}
  [[ $bucket =~ ^[a-z0-9][-a-z0-9_.]{1,220}[a-z0-9]$ ]] ||
    usage_error "$(basename "$0"): error: --gcsfuse bucket must be a Cloud Storage bucket name, got '$bucket'"
  [[ -z $prefix || $prefix =~ ^[A-Za-z0-9._/-]+$ ]] ||
    usage_error "$(basename "$0"): error: --gcsfuse prefix may hold letters, digits and . _ / - only, got '$prefix'"
  only_dir=""
  if [ -n "$prefix" ]; then only_dir="--only-dir $prefix "; fi
  mount_steps+="
if ! command -v gcsfuse >/dev/null 2>&1; then
  echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -c -s) main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
  sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
  sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq gcsfuse
fi
if ! mountpoint -q $gcs_mount; then
  sudo mkdir -p $gcs_mount
  sudo chown \"\$(id -u):\$(id -g)\" $gcs_mount
  gcsfuse --implicit-dirs $only_dir$bucket $gcs_mount
fi"
fi

require_gcloud
ssh_flags
if [ -d "$source_spec" ]; then
  [ -f "$source_spec/pyproject.toml" ] || die "$source_spec is not a umr-jax checkout (no pyproject.toml)"
  tarball=$(mktemp "${TMPDIR:-/tmp}/umr-jax-src.XXXXXX")
  trap 'rm -f "$tarball"' EXIT
  tar -C "$source_spec" --exclude=.git --exclude=.venv --exclude=venv --exclude=__pycache__ \
    --exclude='*.egg-info' --exclude=./runs --exclude=./logs -czf "$tarball" .
  for node in "${NODES[@]}"; do
    echo "copying $source_spec to every worker of $node" >&2
    tpu_vm scp "$tarball" "$node:umr-jax-src.tar.gz" --zone="$zone" --worker=all "${SSH_FLAGS[@]}"
  done
  # Everything but runs/ and logs/ is replaced, so files deleted here do not linger there.
  fetch="mkdir -p $REMOTE_REPO
find $REMOTE_REPO -mindepth 1 -maxdepth 1 ! -name runs ! -name logs -exec rm -rf {} +
tar -xzf \$HOME/umr-jax-src.tar.gz -C $REMOTE_REPO
rm -f \$HOME/umr-jax-src.tar.gz"
else
  case "$source_spec" in
    https://* | http://* | ssh://* | git@*) url=$source_spec ;;
    git+*) url=${source_spec#git+} ;;
    *) die "SOURCE '$source_spec' is neither a local checkout nor a git URL" ;;
  esac
  quoted_url=$(printf '%q' "$url")
  fetch="if [ -d $REMOTE_REPO/.git ]; then
  git -C $REMOTE_REPO fetch -q --depth 1 origin
  git -C $REMOTE_REPO reset -q --hard FETCH_HEAD
elif [ -e $REMOTE_REPO ]; then
  echo \"$REMOTE_REPO is a copy of a local checkout, not a git clone: move it away (keep its runs/) or set up with --source LOCAL_CHECKOUT\" >&2
  exit 1
else
  git clone -q --depth 1 $quoted_url $REMOTE_REPO
fi"
fi

check='import jax; print(f"worker {jax.process_index()}: {jax.local_device_count()} local / {jax.device_count()} TPU devices ({jax.devices()[0].device_kind})")'
remote="set -euo pipefail
$fetch$mount_steps
if ! command -v python3.11 >/dev/null 2>&1; then
  sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
  sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq python3.11 python3.11-venv
fi
python3.11 -m venv $REMOTE_VENV
$REMOTE_VENV/bin/pip install -q --upgrade pip
$REMOTE_VENV/bin/pip install -q -e \"${REMOTE_REPO}[tpu]\"
cd $REMOTE_REPO
$REMOTE_VENV/bin/python -c $(printf '%q' "$check")"

echo "installing umr-jax[tpu] on every worker of ${NODES[*]}" >&2
pids=()
for i in "${!NODES[@]}"; do
  label=$(slice_label "$slices" "$i")
  (
    tpu_ssh "${NODES[$i]}" "$zone" all "$remote" 2>&1 |
      while IFS= read -r line; do printf '[%s%s] %s\n' "$label" "${NODES[$i]}" "$line"; done
  ) &
  pids+=("$!")
done
failed=()
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || failed+=("${NODES[$i]}")
done
[ "${#failed[@]}" -eq 0 ] || die "setup failed on ${failed[*]}; its output is above"
slices_flag=""
if [ "$slices" -gt 1 ]; then slices_flag=" --slices $slices"; fi
echo "next: tpu/run.sh $name $zone$slices_flag -- umr-jax --help" >&2
