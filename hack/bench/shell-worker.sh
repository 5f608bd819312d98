#!/usr/bin/env bash
# The shell-script way that kubestrap replaces, as `make bench` runs it: the
# worker half of the usual install_master.sh / install_worker.sh pair. The
# master wrote the join command it printed to s3://$BUCKET/$KEY; each worker
# polls for it with the AWS CLI and runs it:
#
#   until aws s3 cp s3://B/join.sh /tmp/join.sh; do sleep N; done; bash /tmp/join.sh
#
# Only difference from the original: the loop is bounded by MAX_TRIES (the
# benchmark's network rule), where the original loops forever.
# Environment: BUCKET, KEY, INTERVAL (seconds), WORKDIR, MAX_TRIES; the AWS CLI
# gets its endpoint and instance-profile credentials from the usual AWS_*
# variables, and `kubeadm` on PATH is the benchmark's fake kubeadm.
set -u
tries=0
until aws s3 cp "s3://$BUCKET/$KEY" "$WORKDIR/join.sh"; do
  tries=$((tries + 1))
  if [ "$tries" -ge "$MAX_TRIES" ]; then
    echo "gave up after $tries tries" >&2
    exit 1
  fi
  sleep "$INTERVAL"
done
bash "$WORKDIR/join.sh"
