#!/bin/sh
# Scripted polecat that saves its token and credential file (to check none of it reaches workflow history), then succeeds.
set -eu
printf '%s\n' "$GT_RUN_TOKEN" >> "$TEST_DIR/tokens"
git ls-remote origin > "$TEST_DIR/ls-remote.out" 2>&1 || true
exec "$(dirname "$0")/good.sh"
