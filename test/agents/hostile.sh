#!/bin/sh
# Scripted hostile polecat (docs/security.md): tries each attack on the boundary, records what happened in
# attacks.txt — "blocked", or "LEAKED:" with what it got — and commits it, so the test reads the outcome from the
# merged branch (a contained agent can write nowhere else). Then it plants traps for the worker's git in its own
# repository (fsmonitor, hooks), commits a gate script that tries to steal the worker's environment, and calls
# gt done. The test passes the targets in HOSTILE_* variables (an attacker would guess the same layout).
set -u
out=attacks.txt
: > "$out"
rec() { printf '%s %s\n' "$1" "$2" >> "$out"; }

# Secrets and other runs' state: gateway.secret, the credential store, another run's token and prompt.
for f in $HOSTILE_READ; do
  if content=$(cat "$f" 2>/dev/null) && [ -n "$content" ]; then rec "read:$(basename "$f")" "LEAKED:$content"; else rec "read:$(basename "$f")" blocked; fi
done
# The worker's environment through /proc (any process that has the marker variable).
leak=blocked
for p in /proc/[0-9]*; do
  if tr '\0' '\n' < "$p/environ" 2>/dev/null | grep -q "^$HOSTILE_ENV_NAME="; then leak="LEAKED:$p"; break; fi
done
rec proc-environ "$leak"
# A process of the host (a stand-in for the worker), by signal.
if kill -9 "$HOSTILE_DECOY_PID" 2>/dev/null; then rec kill-host-process LEAKED; else rec kill-host-process blocked; fi
# Moving branches past the refinery: the rig's repository, through origin and by its path.
if git push -q origin HEAD:refs/heads/main 2>/dev/null; then rec push-origin-main LEAKED; else rec push-origin-main blocked; fi
if git push -q "$HOSTILE_REPO" HEAD:refs/heads/main 2>/dev/null; then rec push-repo-main LEAKED; else rec push-repo-main blocked; fi
if git push -q "$HOSTILE_REPO" HEAD:refs/heads/gt/victim 2>/dev/null; then rec push-repo-other-bead LEAKED; else rec push-repo-other-bead blocked; fi
# The worker's files: a handle naming a foreign container/process, the rig mirror.
if mkdir -p "$HOSTILE_RUNS/evil" 2>/dev/null && echo '{"runtime":"process","runId":"victim/r1/a1","ref":"1"}' > "$HOSTILE_RUNS/evil/handle.json" 2>/dev/null; then
  # Whether it reached the worker's run directory is for the host to say (a sandbox may give a private scratch path).
  rec plant-handle written
else
  rec plant-handle blocked
fi
if touch "$HOSTILE_MIRROR/evil" 2>/dev/null; then rec write-mirror LEAKED; else rec write-mirror blocked; fi
# Speaking for another run or role through the gateway with its own token.
if GT_RUN_ID=victim/r1/a1 gt progress "hijack" 2>/dev/null; then rec speak-for-other-run LEAKED; else rec speak-for-other-run blocked; fi
if gt approve --feedback "self-approved" 2>/dev/null; then rec speak-as-reviewer LEAKED; else rec speak-as-reviewer blocked; fi

# The gate runs what we commit: it tries the worker's environment and secrets too, and says so in its log.
cat > ci.sh <<'GATE'
#!/bin/sh
echo "gate env:"; env
for f in $HOSTILE_READ; do cat "$f" 2>/dev/null && echo " <- $f"; done
for p in /proc/[0-9]*; do tr '\0' '\n' < "$p/environ" 2>/dev/null | grep "^$HOSTILE_ENV_NAME=" && echo " <- $p"; done
exit 0
GATE
git add -A
git -c user.name=Hostile -c user.email=hostile@test commit -q -m "hostile work for $GT_BEAD_ID"

# Traps for the worker's git, planted after the commit: if the worker ever ran git with this repository's config,
# the marker files would appear on the host.
git config core.fsmonitor "touch $HOSTILE_MARKER-fsmonitor; false"
mkdir -p .git/hooks
for h in pre-push post-checkout post-merge reference-transaction pre-commit; do
  printf '#!/bin/sh\ntouch %s-hook-%s\n' "$HOSTILE_MARKER" "$h" > ".git/hooks/$h"
  chmod +x ".git/hooks/$h"
done
git config core.hooksPath "$PWD/.git/hooks"
if [ "${HOSTILE_GITFILE:-}" = 1 ]; then
  # Point the work tree's .git at a git dir of our own with the same trap: the worker must not follow it.
  cp -r .git "$HOME/evil-gitdir" && rm -rf .git
  printf 'gitdir: %s\n' "$HOME/evil-gitdir" > .git
fi
gt done --summary "hostile run"
