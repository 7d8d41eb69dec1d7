#!/bin/sh
# Scripted polecat for convoy views: waits until the test creates $TEST_DIR/go-<bead id> (so a test decides when
# each bead may finish, one at a time), then does what convoy-instant.sh does. Beads whose id ends in one of the
# suffixes in $FAIL_BEADS fail at once (exit without gt done), on every attempt.
set -eu
for suffix in ${FAIL_BEADS:-}; do
  case "$GT_BEAD_ID" in
    *-"$suffix")
      echo "failing $GT_BEAD_ID on purpose" >&2
      exit 1
      ;;
  esac
done
while [ ! -f "$TEST_DIR/go-$GT_BEAD_ID" ]; do sleep 0.2; done
exec "$(dirname "$0")/convoy-instant.sh"
