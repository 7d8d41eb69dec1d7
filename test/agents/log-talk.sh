#!/bin/sh
# Scripted polecat for `gt logs`: writes a line holding terminal control sequences and some UTF-8, waits until the
# test creates $TEST_DIR/release-$GT_BEAD_ID, writes a second line, then succeeds.
set -eu
printf 'first part of %s: \033[31mred\033[0m caf\303\251 \007bell\n' "$GT_BEAD_ID"
touch "$TEST_DIR/waiting-$GT_BEAD_ID"
while [ ! -f "$TEST_DIR/release-$GT_BEAD_ID" ]; do sleep 0.1; done
echo "second part of $GT_BEAD_ID"
exec "$(dirname "$0")/good.sh"
