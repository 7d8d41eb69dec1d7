#!/bin/sh
# Scripted polecat for contained runtimes (which see no test directory): says it started, waits until an operator
# nudges it with "release", then succeeds.
set -eu
gt progress "started in $(hostname)"
while ! gt inbox | grep -q release; do sleep 0.3; done
exec "$(dirname "$0")/good.sh"
