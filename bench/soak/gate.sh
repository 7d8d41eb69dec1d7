#!/bin/sh
# Soak gate: fails a tree that holds a BROKEN file; fails a good tree now and then ($SOAK_FLAKY_PERCENT, a flaky
# gate); runs slowly while $SOAK_DIR/slow-gates exists. Every verdict is logged with the tree it was given, so the
# invariant checker can tell whether each tree the target held passed.
set -u
tree=$(git rev-parse HEAD^{tree})
[ -e "$SOAK_DIR/slow-gates" ] && sleep 2
if find . -name '*.BROKEN' -not -path './.git/*' | grep -q .; then
  echo "$tree fail broken" >> "$SOAK_DIR/gates.log"; echo "a BROKEN file is in the tree"; exit 1
fi
roll=$(( $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 100 ))
if [ "$roll" -lt "${SOAK_FLAKY_PERCENT:-0}" ]; then
  echo "$tree fail flake" >> "$SOAK_DIR/gates.log"; echo "flaky gate failure"; exit 1
fi
echo "$tree pass" >> "$SOAK_DIR/gates.log"
