#!/bin/sh
# Scripted polecat that succeeds: one commit with a file named after the bead, then gt done.
set -eu
gt progress "working on $GT_BEAD_ID"
mkdir -p work
echo "done by $GT_RUN_ID" > "work/$GT_BEAD_ID.txt"
git add -A
git -c user.name=Polecat -c user.email=polecat@test commit -q -m "work for $GT_BEAD_ID"
gt done --summary "committed work/$GT_BEAD_ID.txt"
