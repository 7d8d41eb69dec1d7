#!/bin/sh
# Scripted polecat whose first round breaks the gate (a file named BROKEN); when its prompt carries the
# gates_failed feedback, it removes the file and commits the fix.
set -eu
commit() { git -c user.name=Polecat -c user.email=polecat@test commit -q "$@"; }
if grep -q "gates_failed" "$GT_PROMPT_FILE"; then
  git rm -q work/BROKEN
  commit -m "fix the gate for $GT_BEAD_ID"
else
  mkdir -p work
  echo "$GT_BEAD_ID" > "work/$GT_BEAD_ID.txt"
  echo "half-done" > work/BROKEN
  git add -A
  commit -m "work for $GT_BEAD_ID"
fi
gt done --summary "round of $GT_RUN_ID"
