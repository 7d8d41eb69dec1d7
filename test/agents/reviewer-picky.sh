#!/bin/sh
# Scripted reviewer: requests changes in a bead's first round and approves later rounds, recording the run and the
# commit it reviewed (its worktree is checked out at the merge request's head).
set -eu
echo "$GT_RUN_ID $(git rev-parse HEAD)" >> "$TEST_DIR/reviews"
case "$GT_RUN_ID" in
  */r1/*) gt request-changes --feedback "Please also add a changelog line for $GT_BEAD_ID" ;;
  *) gt approve --feedback "looks good" ;;
esac
