#!/bin/sh
# Scripted polecat that succeeds like `good`, then does not exit after its gt done: its host stops it after the grace.
set -eu
mkdir -p work
echo "done by $GT_RUN_ID" > "work/$GT_BEAD_ID.txt"
git add -A
git -c user.name=Polecat -c user.email=polecat@test commit -q -m "work for $GT_BEAD_ID"
gt done --summary "committed work/$GT_BEAD_ID.txt"
exec sleep 600
