#!/usr/bin/env bash
# Wait until a queued resource (tpu/create.sh) is ACTIVE, i.e. its TPU VMs exist and can be used.
#
#   tpu/wait.sh NAME ZONE [--timeout SECONDS] [--interval SECONDS]
#   tpu/wait.sh umr-v5e us-west4-a --timeout 7200
#
# Polls 'gcloud compute tpus queued-resources describe' every --interval seconds (default 30),
# printing each change of state (WAITING_FOR_RESOURCES, PROVISIONING, ...). Exits 0 once the state
# is ACTIVE; 1 with one line when it is FAILED, SUSPENDING or SUSPENDED (the request will not be
# filled: see its failure with 'gcloud compute tpus queued-resources describe NAME --zone=ZONE',
# then tpu/delete.sh it) or when --timeout seconds (default 3600) pass first; the request stays
# queued then, and running tpu/wait.sh again keeps waiting.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"

USAGE="usage: tpu/wait.sh NAME ZONE [--timeout SECONDS] [--interval SECONDS]"
[ "$#" -ge 2 ] || usage_error "$USAGE"
name=$1
zone=$2
shift 2
timeout=3600 interval=30
while [ "$#" -gt 0 ]; do
  case "$1" in
    --timeout | --interval)
      [ "$#" -ge 2 ] || usage_error "$USAGE"
      if [ "$1" = --timeout ]; then timeout=$2; else interval=$2; fi
      shift 2
      ;;
    *) usage_error "$USAGE" ;;
  esac
done
check_name_and_zone "$name" "$zone"
for value in "$timeout" "$interval"; do
  [[ $value =~ ^(0|[1-9][0-9]{0,6})$ ]] ||
    usage_error "$(basename "$0"): error: --timeout and --interval must be whole seconds, got '$value'"
done
require_gcloud

start=$SECONDS
last=""
while true; do
  state=$(queued_resources describe "$name" --zone="$zone" --format='value(state.state)') ||
    die "cannot describe queued resource '$name' in zone '$zone' (tpu/create.sh makes it)"
  elapsed=$((SECONDS - start))
  if [ "$state" != "$last" ]; then
    echo "queued resource $name: $state (${elapsed}s)" >&2
    last=$state
  fi
  case "$state" in
    ACTIVE)
      echo "next: tpu/setup.sh $name $zone (with --slices N for a Multislice request)" >&2
      exit 0
      ;;
    FAILED | SUSPENDING | SUSPENDED)
      die "queued resource '$name' is $state and will not become ACTIVE; see why with 'gcloud compute tpus queued-resources describe $name --zone=$zone', then tpu/delete.sh $name $zone"
      ;;
  esac
  if [ "$elapsed" -ge "$timeout" ]; then
    die "queued resource '$name' is still $state after ${timeout}s; it stays queued: run tpu/wait.sh again, or tpu/delete.sh $name $zone"
  fi
  sleep "$interval"
done
