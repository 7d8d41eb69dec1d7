/** GT_HOME: the town's local state on this host (Temporal's SQLite file, git mirrors, worktrees, run files). */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
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
  /** Worker-owned record of a run (pid, exit code, output log, handle): never visible to the run. */
  runDir: (runId: string, home = gtHome()) => join(home, 'runs', fsSafe(runId)),
  /** The run's own directory (prompt, token file, HOME, TMPDIR), the only part of GT_HOME a sandboxed run sees. */
  agentDir: (runId: string, home = gtHome()) => join(home, 'agents', fsSafe(runId)),
  /** Where the worker checks a finished run's branch before taking it (worker-owned). */
  quarantine: (rig: string, key: string, home = gtHome()) =>
    join(home, 'rigs', rig, 'quarantine', `${fsSafe(key)}.git`),
  /**
   * The gates one attempt of a merge section (or a formula step's gates) started, one run id a line (worker-owned): a
   * retry stops those a killed worker left running (activities/merge.ts attemptTree).
   */
  gateLedger: (rig: string, key: string, home = gtHome()) => join(home, 'rigs', rig, 'gates', `${fsSafe(key)}.runs`),
  /** Where the rig's discarded trees wait to be deleted (activities/trash.ts), on the file system of the others. */
  trash: (rig: string, home = gtHome()) => join(home, 'rigs', rig, 'trash'),
  binDir: (home = gtHome()) => join(home, 'bin'),
};

/** Stable id of this host: the suffix of its agent task queue. */
export function hostId(): string {
  return fsSafe(process.env.GT_HOST_ID ?? hostname());
}

/**
 * Creates GT_HOME owner-only (or narrows an existing one): it holds the gateway secret, the credential store and
 * every run's record, and other users of the host have no business there.
 */
export function ensureHome(home = gtHome()): string {
  mkdirSync(home, { recursive: true, mode: 0o700 });
  if ((statSync(home).mode & 0o077) !== 0) chmodSync(home, 0o700);
  return home;
}

/** A shared secret shorter than this is refused: HMAC keys of 256 bits, as the generated one is. */
export const MIN_GATEWAY_SECRET_BYTES = 32;

/**
 * The secret that signs per-run agent tokens. All gateways of a town must share it (GT_GATEWAY_SECRET);
 * on a single host it is generated once under GT_HOME with owner-only permissions.
 */
export function gatewaySecret(home = gtHome()): Buffer {
  const fromEnv = process.env.GT_GATEWAY_SECRET;
  if (fromEnv) {
    const secret = Buffer.from(fromEnv, 'utf8');
    if (secret.length < MIN_GATEWAY_SECRET_BYTES) {
      throw new Error(
        `GT_GATEWAY_SECRET has ${secret.length} bytes; it must have at least ${MIN_GATEWAY_SECRET_BYTES} (e.g. \`openssl rand -hex 32\`), the same on every worker of the town`,
      );
    }
    return secret;
  }
  const file = join(home, 'gateway.secret');
  try {
    return Buffer.from(readFileSync(file, 'utf8').trim(), 'hex');
  } catch {
    ensureHome(home);
    const secret = randomBytes(32).toString('hex');
    try {
      writeFileSync(file, secret, { mode: 0o600, flag: 'wx' });
    } catch {
      // Another process created it first: use theirs.
    }
    return Buffer.from(readFileSync(file, 'utf8').trim(), 'hex');
  }
}
