#!/bin/sh
# Scripted polecat for convoys: commits a file named after the bead and calls the gateway's /v1/done directly
# (curl instead of the gt CLI, so hundreds of beads take seconds, not minutes). Beads whose id ends in one of
# the space-separated suffixes in $FAIL_BEADS exit without gt done instead (every attempt fails).
set -eu
for suffix in ${FAIL_BEADS:-}; do
  case "$GT_BEAD_ID" in
    *-"$suffix")
      echo "failing $GT_BEAD_ID on purpose" >&2
      exit 1
      ;;
  esac
done
if [ -n "${TEST_DIR:-}" ]; then echo "$GT_RUN_ID $$" >> "$TEST_DIR/starts"; fi
# A bead may wait for the test to release it (to observe it while running).
if [ -n "${TEST_DIR:-}" ] && [ -n "${HOLD_BEADS:-}" ]; then
  for suffix in $HOLD_BEADS; do
    case "$GT_BEAD_ID" in
      *-"$suffix") while [ ! -f "$TEST_DIR/release" ]; do sleep 0.2; done ;;
    esac
  done
fi
mkdir -p work
echo "done by $GT_RUN_ID" > "work/$GT_BEAD_ID.txt"
git add -A
git -c user.name=Polecat -c user.email=polecat@test commit -q -m "work for $GT_BEAD_ID"
curl -fsS -X POST -H "authorization: Bearer $(cat "$GT_RUN_TOKEN_FILE")" -H 'content-type: application/json' \
  -d '{"summary":"committed work"}' "$GT_GATEWAY_URL/v1/done" > /dev/null
