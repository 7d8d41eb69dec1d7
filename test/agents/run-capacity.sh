#!/bin/sh
# Scripted polecat for rig capacity: appends "start <run>" and "end <run>" to $TEST_DIR/events around a wait for the
# test's $TEST_DIR/release-<run file name>. A bead with $TEST_DIR/crash-<bead> crashes its first attempt after its end
# mark (exit 3, no gt done), so its second attempt asks the dispatch gate again with the bead's slung snapshot.
set -eu
run=$(echo "$GT_RUN_ID" | tr '/' '_')
echo "start $GT_RUN_ID" >> "$TEST_DIR/events"
while [ ! -f "$TEST_DIR/release-$run" ]; do sleep 0.1; done
echo "end $GT_RUN_ID" >> "$TEST_DIR/events"
if [ -f "$TEST_DIR/crash-$GT_BEAD_ID" ] && [ "${GT_RUN_ID##*/}" = a1 ]; then exit 3; fi
exec "$(dirname "$0")/good.sh"
