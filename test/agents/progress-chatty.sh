#!/bin/sh
# Scripted polecat for progress coalescing: tells the test where its gateway and token are (the test then reports
# progress for it thousands of times), waits for $TEST_DIR/release, then succeeds.
set -eu
echo "$GT_GATEWAY_URL $GT_RUN_TOKEN_FILE" > "$TEST_DIR/gateway"
while [ ! -f "$TEST_DIR/release" ]; do sleep 0.1; done
exec "$(dirname "$0")/good.sh"
