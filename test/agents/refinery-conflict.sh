#!/bin/sh
# Scripted polecat for conflict tests: every bead rewrites the same line of shared.txt. When its prompt carries
# conflict feedback from the refinery, it merges the target and rewrites the conflicting file keeping both lines.
set -eu
commit() { git -c user.name=Polecat -c user.email=polecat@test commit -q "$@"; }
if grep -q "conflicts with" "$GT_PROMPT_FILE"; then
  git fetch -q origin
  if ! git -c user.name=Polecat -c user.email=polecat@test merge -q --no-edit "origin/$GT_TARGET_BRANCH" >/dev/null 2>&1; then
    { git show "origin/$GT_TARGET_BRANCH:shared.txt"; echo "$GT_BEAD_ID"; } > shared.txt
    git add shared.txt
    commit --no-edit
  fi
else
  echo "$GT_BEAD_ID" > shared.txt
  git add shared.txt
  commit -m "shared.txt for $GT_BEAD_ID"
fi
gt done --summary "wrote shared.txt"
