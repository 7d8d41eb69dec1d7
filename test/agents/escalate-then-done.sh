#!/bin/sh
# Scripted polecat that asks a human for help, then finishes its work anyway.
set -eu
gt escalate --reason "the spec for $GT_BEAD_ID is ambiguous" --severity low
exec "$(dirname "$0")/good.sh"
