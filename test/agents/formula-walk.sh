#!/bin/sh
# Scripted polecat for session = "single" formulas (test/formula-single.test.ts): keeps its prompt as
# $FORMULA_MARKS/walk-<n>.md, tries `gt done` and an out-of-order `gt step done` first (both must be refused; their
# answers kept as early-done-<n>.err and out-of-order-<n>.err), then reports every step its checklist has not ticked,
# in order, commits and calls gt done. With WALK_CRASH_AFTER=<step> its first run exits after reporting that step.
set -eu
n=$(($(ls "$FORMULA_MARKS" | grep -c '^walk-' || true) + 1))
cp "$GT_PROMPT_FILE" "$FORMULA_MARKS/walk-$n.md"
gt progress "walking"
steps=$(sed -n 's/^- \[ \] [0-9]*\. `\([^`]*\)`.*/\1/p' "$GT_PROMPT_FILE")
if gt done --summary early 2> "$FORMULA_MARKS/early-done-$n.err"; then exit 3; fi
last=$(echo "$steps" | tail -1)
first=$(echo "$steps" | head -1)
if [ "$last" != "$first" ] && gt step done "$last" --output wrong 2> "$FORMULA_MARKS/out-of-order-$n.err"; then exit 4; fi
mkdir -p work
for step in $steps; do
  echo "$step by $GT_RUN_ID" >> "work/$GT_BEAD_ID.txt"
  gt step done "$step" --output "output of $step by $GT_RUN_ID" >> "$FORMULA_MARKS/answers"
  if [ "$n" = 1 ] && [ "$step" = "${WALK_CRASH_AFTER:-}" ]; then exit 1; fi
done
git add -A
git -c user.name=Polecat -c user.email=polecat@test commit -q -m "walked $GT_BEAD_ID ($GT_RUN_ID)"
gt done --summary "walked by $GT_RUN_ID"
