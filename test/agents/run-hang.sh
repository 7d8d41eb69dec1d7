#!/bin/sh
# Scripted polecat that hangs without ever reporting progress: GUPP must stop it at the stall timeout.
echo "$GT_RUN_ID $$" >> "$TEST_DIR/hang-starts"
exec sleep 600
