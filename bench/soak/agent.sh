#!/bin/sh
# Soak polecat. Its behaviour comes from its bead id's kind (…-<kind>-<n>): good, crash (the first run exits without
# gt done), stall (the first run says nothing until it is stopped), conflict (round 1 edits a file every conflict bead
# edits; later rounds take the target's version), broken (round 1 leaves a BROKEN file the gate rejects).
# The bead $SOAK_DIR/hold names waits before its gt done, reporting progress, until the chaos driver removes the file.
# For the invariant checker it records when it runs (start, a heartbeat every 0.5 s, end) under $SOAK_DIR/marks, and
# keeps a copy of its run token under $SOAK_DIR/tokens so the chaos driver can replay stale `gt done`s.
set -eu
run_file=$(printf '%s' "$GT_RUN_ID" | tr '/' '_')
marks="$SOAK_DIR/marks/$run_file"
now() { date +%s%3N; }
echo "start $(now) $$ $GT_GATEWAY_URL" >> "$marks"
( while :; do echo "alive $(now)" >> "$marks"; sleep 0.5; done ) &
beat=$!
trap 'kill $beat 2>/dev/null; echo "end $(now)" >> "$marks"' EXIT
mkdir -p "$SOAK_DIR/tokens"
{ echo "$GT_RUN_ID"; echo "$GT_GATEWAY_URL"; cat "$GT_RUN_TOKEN_FILE"; } > "$SOAK_DIR/tokens/$run_file.tmp"
mv "$SOAK_DIR/tokens/$run_file.tmp" "$SOAK_DIR/tokens/$run_file"

kind=$(printf '%s' "$GT_BEAD_ID" | sed -E 's/.*-([a-z]+)-[0-9]+$/\1/')
round=$(printf '%s' "$GT_RUN_ID" | sed -E 's#.*/r([0-9]+)/a[0-9]+$#\1#')
attempt=$(printf '%s' "$GT_RUN_ID" | sed -E 's#.*/a([0-9]+)$#\1#')
commit() { git add -A && git -c user.name=Soak -c user.email=soak@test commit -q -m "$1"; }

case "$kind" in
  crash) if [ "$attempt" = 1 ]; then exit 3; fi ;;
  stall) if [ "$attempt" = 1 ]; then sleep 3600; fi ;;
esac
# Real agents take a while: long enough for host kills and pauses to find live runs.
sleep "${SOAK_WORK_SECONDS:-2}"
gt progress "working" > /dev/null
while [ "$(cat "$SOAK_DIR/hold" 2>/dev/null)" = "$GT_BEAD_ID" ]; do
  # Progress keeps the run from counting as stalled; one refused while the server restarts is no reason to quit.
  gt progress "held until the chaos driver's faults have fallen" > /dev/null 2>&1 || true
  sleep 2
done
mkdir -p work
if [ "$round" -gt 1 ]; then
  # Rework: take the target as it is now (its version wins any conflict), drop what the gate rejected.
  # As the prompt says: fetch origin, merge origin/<target>.
  git fetch -q origin
  git -c user.name=Soak -c user.email=soak@test merge -q -X theirs --no-edit "origin/$GT_TARGET_BRANCH"
  rm -f "work/$GT_BEAD_ID.BROKEN"
fi
case "$kind" in
  conflict) [ "$round" = 1 ] && echo "$GT_BEAD_ID" > work/conflict.txt ;;
  broken) [ "$round" = 1 ] && echo "this tree fails the gate" > "work/$GT_BEAD_ID.BROKEN" ;;
esac
# The run id makes every round's commit a real change (a rework round after a flaky gate changes nothing else).
echo "$GT_BEAD_ID $GT_RUN_ID" > "work/$GT_BEAD_ID.txt"
commit "work for $GT_BEAD_ID ($GT_RUN_ID)"
gt done --summary "soak: $kind bead, round $round" > /dev/null
echo "done $(now)" >> "$marks"
