#!/usr/bin/env bash
# Helpers shared by the tpu/ scripts; sourced by them, not run.
#
# Layout on every TPU VM worker (all paths under the login user's home):
#   ~/umr-jax        the checkout (copied from here or cloned by setup.sh, installed editable): run.sh
#                    runs every command in it, so configs/... and relative outputs (runs/...) resolve there
#   ~/umr-jax-venv   the Python 3.11 virtual environment that setup.sh creates
#
# A TPU is a queued resource NAME (create.sh) holding one slice, the TPU VM node NAME, or with
# --slices N (Multislice) the nodes NAME-0 ... NAME-(N-1); each node has one or more workers (hosts).
#
# Environment:
#   TPU_PROJECT      Google Cloud project for every gcloud call (default: gcloud's own)
#   TPU_NUM_WORKERS  skip asking gcloud how many workers (hosts) each slice has (a positive integer)
#   TPU_SSH_FLAGS    extra flags for 'gcloud compute tpus tpu-vm ssh/scp', e.g. --tunnel-through-iap

# $HOME stays literal here: these go into command lines that the workers' shells expand.
# shellcheck disable=SC2034
REMOTE_REPO="\$HOME/umr-jax"
# shellcheck disable=SC2034
REMOTE_VENV="\$HOME/umr-jax-venv"

die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 1
}

usage_error() {
  echo "$1" >&2
  exit 2
}

# check_resource_name WHAT VALUE: exit 2 unless VALUE is a Google Cloud resource name: a lowercase
# letter, then lowercase letters, digits or hyphens, not ending in a hyphen, 63 at most. Names and
# zones go to gcloud as arguments, so this is also what keeps one from being read as a flag.
check_resource_name() {
  [[ $2 =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]] ||
    usage_error "$(basename "$0"): error: $1 must be a lowercase letter, then up to 62 lowercase letters, digits or hyphens (not ending in '-'), got '$2'"
}

# check_name_and_zone NAME ZONE: both checked as above, before any gcloud call.
check_name_and_zone() {
  check_resource_name NAME "$1"
  check_resource_name ZONE "$2"
}

# check_count WHAT VALUE: exit 2 unless VALUE is a positive decimal integer (9999 at most).
# Bash arithmetic evaluates a variable's value as an expression and runs the command substitutions
# in an array subscript there, so nothing else may reach a (( )) loop.
check_count() {
  [[ $2 =~ ^[1-9][0-9]{0,3}$ ]] ||
    usage_error "$(basename "$0"): error: $1 must be a positive integer (at most 9999), got '$2'"
}

require_gcloud() {
  command -v gcloud >/dev/null 2>&1 ||
    die "gcloud not found; install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install) and run 'gcloud auth login'"
}

# gcloud compute tpus GROUP SUBCOMMAND ARGS..., with --project when TPU_PROJECT is set.
tpus() {
  gcloud compute tpus "$@" ${TPU_PROJECT:+"--project=$TPU_PROJECT"}
}

tpu_vm() {
  tpus tpu-vm "$@"
}

queued_resources() {
  tpus queued-resources "$@"
}

# ssh_flags: TPU_SSH_FLAGS split into words, into the array SSH_FLAGS.
ssh_flags() {
  SSH_FLAGS=()
  if [ -n "${TPU_SSH_FLAGS:-}" ]; then
    read -r -a SSH_FLAGS <<<"$TPU_SSH_FLAGS"
  fi
}

# tpu_ssh NODE ZONE WORKER COMMAND: run COMMAND (a bash command line) on worker WORKER (or all) of NODE.
tpu_ssh() {
  ssh_flags
  tpu_vm ssh "$1" --zone="$2" --worker="$3" "${SSH_FLAGS[@]}" --command="$4"
}

# slice_nodes NAME SLICES: the TPU VM node names into the array NODES: NAME for one slice, else
# NAME-0 ... NAME-(SLICES-1), the names a queued resource with --node-prefix=NAME gives its nodes.
slice_nodes() {
  NODES=()
  if [ "$2" -eq 1 ]; then
    NODES=("$1")
    return
  fi
  local last="$1-$(($2 - 1))"
  [ "${#last}" -le 63 ] ||
    usage_error "$(basename "$0"): error: NAME is too long for $2 slices: node '$last' has more than 63 characters"
  local i
  for ((i = 0; i < $2; i++)); do
    NODES+=("$1-$i")
  done
}

# slice_label SLICES I: how logs and messages name slice I ('' for a single slice).
slice_label() {
  if [ "$1" -gt 1 ]; then echo "slice $2 "; fi
}

# worker_count NODE ZONE: how many hosts the TPU VM node (slice) has.
worker_count() {
  if [ -n "${TPU_NUM_WORKERS:-}" ]; then
    check_count TPU_NUM_WORKERS "$TPU_NUM_WORKERS"
    echo "$TPU_NUM_WORKERS"
    return
  fi
  local endpoints count
  endpoints=$(tpu_vm describe "$1" --zone="$2" --format='value(networkEndpoints[].ipAddress)') ||
    die "cannot describe TPU '$1' in zone '$2'"
  # one address per worker, separated by ';' (or ',')
  count=$(printf '%s\n' "$endpoints" | awk -F'[;,]' '{ for (i = 1; i <= NF; i++) if ($i ~ /[0-9]/) n++ } END { print n + 0 }')
  [ "$count" -ge 1 ] || die "TPU '$1' in zone '$2' reports no workers (is it READY? tpu/wait.sh NAME $2)"
  echo "$count"
}
