#!/bin/sh
# Scripted polecat for formula steps (test/formula-*.test.ts). Keeps a copy of each prompt as
# $FORMULA_MARKS/<step>-<n>.md (the rig's --env names the directory), commits in the steps that change code, and
# reports the step's output with gt done (naming $FORMULA_AGENT when a step's own agent command sets it).
# `implement` writes "broken" until its prompt carries feedback (a loop's or an earlier round's), so a gate checking
# for it fails once and sends the work back. Legs commit their approach; the synthesis keeps every leg's.
set -eu
id=$(sed -n 's/^This run does step `\([^`]*\)`.*/\1/p' "$GT_PROMPT_FILE" | head -1)
# A leg of a legs step ("## Step 1/2: … — leg 2 of 3 (formula …)") keeps its prompt as <step>-leg<k>-<n>.md.
leg=$(sed -n 's/^## Step .* leg \([0-9]*\) of [0-9]* (formula .*/\1/p' "$GT_PROMPT_FILE" | head -1)
mark=$id${leg:+-leg$leg}
n=$(ls "$FORMULA_MARKS" | grep -c "^$mark-" || true)
cp "$GT_PROMPT_FILE" "$FORMULA_MARKS/$mark-$((n + 1)).md"
gt progress "step $id"
# With FORMULA_FAIL=<step>, that step exits without gt done (a failed attempt) until the test creates $FORMULA_MARKS/fixed.
if [ "$id" = "${FORMULA_FAIL:-}" ] && [ ! -e "$FORMULA_MARKS/fixed" ]; then exit 3; fi
commit() {
  mkdir -p work
  printf '%s\n' "$1" > "work/$GT_BEAD_ID.txt"
  git add -A
  git -c user.name=Polecat -c user.email=polecat@test commit -q -m "$id for $GT_BEAD_ID ($GT_RUN_ID)"
}
case "$id" in
  implement)
    if grep -q -e 'sent the work back' -e 'Your previous work was sent back' "$GT_PROMPT_FILE"; then commit "fixed by $GT_RUN_ID"; else commit "broken by $GT_RUN_ID"; fi
    ;;
  legs)
    # Every leg commits its own approach, and waits (up to 60 s) until all its sibling legs have started: the legs
    # are live at the same time.
    commit "approach of leg $leg by $GT_RUN_ID"
    # Speaking for a sibling leg (a live run of the same bead) is refused: the token names this run only.
    case "$GT_RUN_ID" in */a1) other=${GT_RUN_ID%/a1}/a2 ;; *) other=${GT_RUN_ID%/a*}/a1 ;; esac
    if GT_RUN_ID=$other gt done --summary "leg $leg speaking for $other" 2> "$FORMULA_MARKS/cross-leg$leg.err"; then exit 5; fi
    touch "$FORMULA_MARKS/started-leg$leg"
    i=0
    while [ "$(ls "$FORMULA_MARKS" | grep -c '^started-leg')" -lt "${FORMULA_LEGS:-3}" ] && [ $i -lt 300 ]; do
      sleep 0.2
      i=$((i + 1))
    done
    ;;
  synthesis)
    # Keeps what the legs' branches (listed in the prompt as origin/gt-leg/...) hold, one line each.
    for b in $(sed -n 's/.*`\(origin\/gt-leg\/[^`]*\)`.*/\1/p' "$GT_PROMPT_FILE"); do
      git show "$b:work/$GT_BEAD_ID.txt"
    done > synthesis.tmp
    # With FORMULA_SYNTH_BROKEN, the first synthesis (no feedback yet) leaves "broken" for the refinery's gate.
    if [ -n "${FORMULA_SYNTH_BROKEN:-}" ] && ! grep -q 'Your previous work was sent back' "$GT_PROMPT_FILE"; then
      echo broken >> synthesis.tmp
    fi
    mkdir -p work && mv synthesis.tmp "work/$GT_BEAD_ID.txt"
    git add -A
    git -c user.name=Polecat -c user.email=polecat@test commit -q -m "synthesis for $GT_BEAD_ID ($GT_RUN_ID)"
    ;;
  submit | review) commit "$(cat "work/$GT_BEAD_ID.txt" 2>/dev/null || true) submitted by $GT_RUN_ID" ;;
esac
if [ -n "${FORMULA_HOLD:-}" ] && { [ "$id" = "$FORMULA_HOLD" ] || [ "$mark" = "$FORMULA_HOLD" ]; } && [ ! -e "$FORMULA_MARKS/release" ]; then
  # Held (a step, or one leg as legs-leg<k>; the worker-kill test kills the worker meanwhile) until the test creates the release file; `held` says the
  # agent is past its gateway calls, so a killed worker interrupts none of them.
  touch "$FORMULA_MARKS/held"
  while [ ! -e "$FORMULA_MARKS/release" ]; do sleep 0.2; done
fi
gt done --summary "output of $id by $GT_RUN_ID${FORMULA_AGENT:+ (agent $FORMULA_AGENT)}"
