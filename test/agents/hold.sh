#!/bin/sh
# Scripted polecat for operator verbs: records "<bead id> <run id> <pid>" in $TEST_DIR/pids, reports progress, then
# waits until the test creates $TEST_DIR/go-<bead id> (so a test decides when each bead finishes), then succeeds.
set -eu
echo "$GT_BEAD_ID $GT_RUN_ID $$" >> "$TEST_DIR/pids"
gt progress "holding $GT_BEAD_ID"
while [ ! -f "$TEST_DIR/go-$GT_BEAD_ID" ]; do sleep 0.2; done
exec "$(dirname "$0")/good.sh"
