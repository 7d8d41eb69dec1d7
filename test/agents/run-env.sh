#!/bin/sh
# Scripted polecat that records the names and values of its environment, then succeeds.
set -eu
env > "$TEST_DIR/env"
exec "$(dirname "$0")/good.sh"
