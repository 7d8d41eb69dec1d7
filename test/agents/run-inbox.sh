#!/bin/sh
# Scripted polecat that waits for an operator's message in its inbox, saves what it read, then finishes.
set -eu
gt progress "waiting for instructions"
touch "$TEST_DIR/waiting"
while :; do
  gt inbox > "$TEST_DIR/inbox.out"
  grep -q 'use tabs' "$TEST_DIR/inbox.out" && break
  sleep 0.3
done
gt inbox --all > "$TEST_DIR/inbox-all.out"
exec "$(dirname "$0")/good.sh"
