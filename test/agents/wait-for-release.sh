#!/bin/sh
# Scripted polecat that waits for the test to create $TEST_DIR/release, recording each start, then succeeds.
set -eu
echo "$GT_RUN_ID $$" >> "$TEST_DIR/starts"
while [ ! -f "$TEST_DIR/release" ]; do sleep 0.2; done
exec "$(dirname "$0")/good.sh"
