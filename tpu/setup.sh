#!/usr/bin/env bash
# Install umr-jax with TPU support on every worker of a TPU VM or pod slice.
#
#   tpu/setup.sh NAME ZONE [SOURCE]
#   tpu/setup.sh umr-v4-64 us-central2-b                                  # this checkout
#   tpu/setup.sh umr-v4-64 us-central2-b https://github.com/ORG/umr-jax.git
#
# SOURCE: a local checkout (default: the one holding this script; copied to every worker
# without .git, virtual environments or run outputs) or a git URL (pip installs it from git).
# On every worker: Python 3.11 (from apt when the image lacks it), a virtual environment in
# ~/umr-jax-venv, 'pip install "umr-jax[tpu]"', and a check that JAX sees the TPU chips.
# All workers run the check at once: on a multi-host slice JAX only starts when every host does.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"

USAGE="usage: tpu/setup.sh NAME ZONE [LOCAL_CHECKOUT | GIT_URL]"
if [ "$#" -lt 2 ] || [ "$#" -gt 3 ]; then usage_error "$USAGE"; fi
name=$1
zone=$2
source_spec=${3:-$(cd "$(dirname "$0")/.." && pwd)}
check_name_and_zone "$name" "$zone"
require_gcloud
ssh_flags

if [ -d "$source_spec" ]; then
  [ -f "$source_spec/pyproject.toml" ] || die "$source_spec is not a umr-jax checkout (no pyproject.toml)"
  tarball=$(mktemp "${TMPDIR:-/tmp}/umr-jax-src.XXXXXX")
  trap 'rm -f "$tarball"' EXIT
  tar -C "$source_spec" --exclude=.git --exclude=.venv --exclude=venv --exclude=__pycache__ \
    --exclude='*.egg-info' --exclude=runs --exclude=logs -czf "$tarball" .
  echo "copying $source_spec to every worker of $name" >&2
  tpu_vm scp "$tarball" "$name:umr-jax-src.tar.gz" --zone="$zone" --worker=all "${SSH_FLAGS[@]}"
  unpack="rm -rf $REMOTE_SRC && mkdir -p $REMOTE_SRC && tar -xzf \$HOME/umr-jax-src.tar.gz -C $REMOTE_SRC"
  requirement="\"${REMOTE_SRC}[tpu]\""  # double-quoted for the worker's shell: $HOME expands there
else
  case "$source_spec" in
    git+*) url=$source_spec ;;
    http://* | https://* | ssh://* | git@* | *.git) url="git+$source_spec" ;;
    *) die "SOURCE '$source_spec' is neither a local checkout nor a git URL" ;;
  esac
  unpack="true"
  requirement=$(printf '%q' "umr-jax[tpu] @ $url")  # quoted for the worker's shell
fi

check='import jax; print(f"worker {jax.process_index()}: {jax.local_device_count()} local / {jax.device_count()} TPU devices ({jax.devices()[0].device_kind})")'
remote="set -euo pipefail
$unpack
if ! command -v python3.11 >/dev/null 2>&1; then
  sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
  sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq python3.11 python3.11-venv
fi
python3.11 -m venv $REMOTE_VENV
$REMOTE_VENV/bin/pip install -q --upgrade pip
$REMOTE_VENV/bin/pip install -q $requirement -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
mkdir -p $REMOTE_RUN
$REMOTE_VENV/bin/python -c $(printf '%q' "$check")"

echo "installing umr-jax[tpu] on every worker of $name" >&2
tpu_ssh "$name" "$zone" all "$remote"
echo "next: tpu/run.sh $name $zone -- umr-jax --help" >&2
