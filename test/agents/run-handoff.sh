#!/bin/sh
# Scripted polecat that hands off: every run but the last hands the bead to a fresh run with a checkpoint and exits;
# the run after $HANDOFFS hand-offs tries one more (recording the answer), then finishes.
set -eu
n=$(echo "$GT_RUN_ID" | sed 's#.*/a##')
cp "$GT_PROMPT_FILE" "$TEST_DIR/prompt-a$n.md"
if [ "$n" -le "$HANDOFFS" ]; then
  gt handoff --checkpoint "part $n of the work is done; do part $((n + 1)) next"
  exit 0
fi
if [ "${TRY_ONE_MORE:-}" = 1 ]; then
  gt handoff --checkpoint "one more" >"$TEST_DIR/refused.out" 2>&1 && echo accepted >>"$TEST_DIR/refused.out" || true
fi
exec "$(dirname "$0")/good.sh"
