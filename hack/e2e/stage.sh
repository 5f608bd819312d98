#!/usr/bin/env bash
# usage: hack/e2e/stage.sh NAME CMD...  -- run CMD and print how long it took.
source "$(dirname "$0")/lib.sh"
stage "$@"
