#!/bin/sh
# Scripted polecat that saves its token and credential file (to check none of it reaches workflow history), then succeeds.
set -eu
printf '%s\n' "$(cat "$GT_RUN_TOKEN_FILE")" >> "$TEST_DIR/tokens"
git ls-remote origin > "$TEST_DIR/ls-remote.out" 2>&1 || true
exec "$(dirname "$0")/good.sh"
