#!/bin/sh
# Scripted polecat that logs when it starts and ends (to prove a rig's capacity) and waits for the test's release.
set -eu
echo "start $GT_BEAD_ID" >> "$TEST_DIR/events"
while [ ! -f "$TEST_DIR/release-$GT_BEAD_ID" ]; do sleep 0.1; done
echo "end $GT_BEAD_ID" >> "$TEST_DIR/events"
exec "$(dirname "$0")/good.sh"
