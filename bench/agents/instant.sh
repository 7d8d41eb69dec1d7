#!/bin/sh
# Bench polecat: no thinking, only the physical work of a bead (one file, one commit) and `gt done`.
# A bead whose id ends in `-bad` also leaves a `.bad` file, which the merge-queue bench's gate rejects.
# With BENCH_TIMES set it records, in ms since the epoch, when it started, when its commit was made and when
# `gt done` returned: the agent's side of the hop latencies (the workflow histories give the other side).
set -eu
started=$(date +%s%3N)
mkdir -p work
echo "$GT_BEAD_ID" > "work/$GT_BEAD_ID.txt"
case "$GT_BEAD_ID" in *-bad) echo "this change breaks the gate" > "work/$GT_BEAD_ID.bad" ;; esac
git add -A
git commit -q -m "work for $GT_BEAD_ID"
committed=$(date +%s%3N)
gt done --summary "bench: committed work/$GT_BEAD_ID.txt" > /dev/null
returned=$(date +%s%3N)
if [ -n "${BENCH_TIMES:-}" ]; then
  # Written with the shell's builtins only (the run id's slashes made underscores by splitting it), straight into its
  # file: a process here would lie between `gt done` accepted and the exit the hop waits for, where the floor's agent
  # runs none. The bench reads the files once every run has ended.
  set -f
  IFS=/
  set -- $GT_RUN_ID
  IFS=_
  printf '{"runId":"%s","started":%s,"committed":%s,"doneReturned":%s}\n' "$GT_RUN_ID" "$started" "$committed" "$returned" > "$BENCH_TIMES/$*.json"
fi
