#!/bin/sh
# Scripted polecat that succeeds like `good`, but sends its gt done through the gateway at $OTHER_GATEWAY_URL (another
# worker's), so its own host's supervision does not know the run is done and its workflow publishes the branch. With
# $HOLD_UNTIL set, it exits only once that file exists (the test acts meanwhile as the other worker would).
set -eu
mkdir -p work
echo "done by $GT_RUN_ID" > "work/$GT_BEAD_ID.txt"
git add -A
git -c user.name=Polecat -c user.email=polecat@test commit -q -m "work for $GT_BEAD_ID"
GT_GATEWAY_URL="$OTHER_GATEWAY_URL" gt done --summary "committed work/$GT_BEAD_ID.txt"
if [ -n "${HOLD_UNTIL:-}" ]; then
  while [ ! -f "$HOLD_UNTIL" ]; do sleep 0.1; done
fi
