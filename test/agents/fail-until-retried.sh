#!/bin/sh
# Scripted polecat for retry tests: a bead whose id ends in one of the space-separated suffixes in $FLAKY_BEADS
# exits without gt done on its first $FAIL_TIMES runs (counted in $TEST_DIR, so across attempts, rounds and retries),
# then works like convoy-instant.sh. Every other bead works at once.
set -eu
for suffix in ${FLAKY_BEADS:-}; do
  case "$GT_BEAD_ID" in
    *-"$suffix")
      count="$TEST_DIR/fails-$GT_BEAD_ID"
      if [ "$(cat "$count" 2>/dev/null | wc -l)" -lt "${FAIL_TIMES:-2}" ]; then
        echo "$GT_RUN_ID" >> "$count"
        echo "failing $GT_RUN_ID on purpose" >&2
        exit 1
      fi
      ;;
  esac
done
FAIL_BEADS='' exec "$(dirname "$0")/convoy-instant.sh"
