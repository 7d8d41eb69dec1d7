#!/bin/sh
# Scripted polecat that always exits without calling gt done: every attempt fails.
echo "giving up on $GT_RUN_ID" >&2
exit 1
