#!/bin/sh
# Scripted polecat: the first attempt saves a checkpoint and crashes; a later one finds it in its prompt and finishes.
set -eu
case "$GT_RUN_ID" in
  */a1)
    gt checkpoint "step 1 of 2 done: the parser is written"
    exit 4
    ;;
esac
cp "$GT_PROMPT_FILE" "$TEST_DIR/prompt-$(echo "$GT_RUN_ID" | tr / _).md"
exec "$(dirname "$0")/good.sh"
