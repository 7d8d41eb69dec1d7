/** GT_HOME: the town's local state on this host (Temporal's SQLite file, git mirrors, worktrees, run files). */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir, hostname } from 'node:os';
import { join } from 'node:path';
import { fsSafe } from '../domain/ids';

export function gtHome(): string {
  return process.env.GT_HOME ?? join(homedir(), '.gastown');
}

export const paths = {
  temporalDb: (home = gtHome()) => join(home, 'temporal.db'),
  mirror: (rig: string, home = gtHome()) => join(home, 'rigs', rig, 'mirror.git'),
  worktree: (rig: string, beadId: string, home = gtHome()) => join(home, 'rigs', rig, 'worktrees', beadId),
  candidate: (rig: string, key: string, home = gtHome()) => join(home, 'rigs', rig, 'candidates', fsSafe(key)),
  runDir: (runId: string, home = gtHome()) => join(home, 'runs', fsSafe(runId)),
  gateLogs: (rig: string, key: string, home = gtHome()) => join(home, 'logs', rig, fsSafe(key)),
  binDir: (home = gtHome()) => join(home, 'bin'),
};

/** Stable id of this host: the suffix of its agent task queue. */
export function hostId(): string {
  return fsSafe(process.env.GT_HOST_ID ?? hostname());
}

/**
 * The secret that signs per-run agent tokens. All gateways of a town must share it (GT_GATEWAY_SECRET);
 * on a single host it is generated once under GT_HOME with owner-only permissions.
 */
export function gatewaySecret(home = gtHome()): Buffer {
  const fromEnv = process.env.GT_GATEWAY_SECRET;
  if (fromEnv) return Buffer.from(fromEnv, 'utf8');
  const file = join(home, 'gateway.secret');
  try {
    return Buffer.from(readFileSync(file, 'utf8').trim(), 'hex');
  } catch {
    mkdirSync(home, { recursive: true });
    const secret = randomBytes(32).toString('hex');
    try {
      writeFileSync(file, secret, { mode: 0o600, flag: 'wx' });
    } catch {
      // Another process created it first: use theirs.
    }
    return Buffer.from(readFileSync(file, 'utf8').trim(), 'hex');
  }
}
