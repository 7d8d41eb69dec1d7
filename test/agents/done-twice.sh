#!/bin/sh
# Scripted polecat that calls gt done twice (a retried HTTP call): the second must change nothing.
set -eu
echo "twice" > "twice-$GT_BEAD_ID.txt"
git add -A
git -c user.name=Polecat -c user.email=polecat@test commit -q -m "work for $GT_BEAD_ID"
gt done --summary first > "$TEST_DIR/done-1.out"
gt done --summary second > "$TEST_DIR/done-2.out"
