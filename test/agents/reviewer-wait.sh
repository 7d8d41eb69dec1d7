#!/bin/sh
# Scripted reviewer that records its start, waits for the test to create $TEST_DIR/release, then approves.
set -eu
echo "$GT_RUN_ID" >> "$TEST_DIR/review-starts"
while [ ! -f "$TEST_DIR/release" ]; do sleep 0.2; done
gt approve
