#!/bin/sh
# Scripted polecat for formula steps (test/formula-*.test.ts). Keeps a copy of each prompt as
# $FORMULA_MARKS/<step>-<n>.md (the rig's --env names the directory), commits in the steps that change code, and
# reports the step's output with gt done (naming $FORMULA_AGENT when a step's own agent command sets it). `implement` writes "broken" until its prompt carries feedback (a loop's or
# an earlier round's), so a gate checking for it fails once and sends the work back.
set -eu
id=$(sed -n 's/^This run does step `\([^`]*\)`.*/\1/p' "$GT_PROMPT_FILE" | head -1)
n=$(ls "$FORMULA_MARKS" | grep -c "^$id-" || true)
cp "$GT_PROMPT_FILE" "$FORMULA_MARKS/$id-$((n + 1)).md"
gt progress "step $id"
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
  submit | review) commit "$(cat "work/$GT_BEAD_ID.txt" 2>/dev/null || true) submitted by $GT_RUN_ID" ;;
esac
if [ -n "${FORMULA_HOLD:-}" ] && [ "$id" = "$FORMULA_HOLD" ] && [ ! -e "$FORMULA_MARKS/release" ]; then
  # Held (the worker-kill test kills the worker meanwhile) until the test creates the release file; `held` says the
  # agent is past its gateway calls, so a killed worker interrupts none of them.
  touch "$FORMULA_MARKS/held"
  while [ ! -e "$FORMULA_MARKS/release" ]; do sleep 0.2; done
fi
gt done --summary "output of $id by $GT_RUN_ID${FORMULA_AGENT:+ (agent $FORMULA_AGENT)}"
