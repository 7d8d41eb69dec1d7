/**
 * The physical floor: the same beads, DAG, agent, merges and gates as an orchestrated run, done by a plain script
 * with no orchestration at all. A bare mirror with worktrees (as the town keeps), the bench agent run directly
 * (its `gt done` is a no-op), a push of the bead's branch, then one merger at a time: `merge --no-ff` onto the
 * target, the gates on exactly that tree, a compare-and-swap push. Nothing else: no mirror fetches (the script is
 * the only writer), no idempotency checks, no durable state — the least time this work can take on this machine.
 *
 * What a bead leaves goes as the town's does, in the background, so that no step grows with the beads before it: its
 * worktree once merged, its branch in the repository with the batch of merged branches it belongs to (one push per
 * MERGED_BRANCH_BATCH, as activities/merged-branches.ts). Kept, they made every push and worktree of a 300-bead floor
 * slower than the one before (its 300th bead took 2.4 times its first: docs/performance.md).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuMark, cpuSpent, type CpuSpent } from './cpu';
import { exec, git, GIT_IDENTITY, mergedWorkFiles } from './git';
import { beadLocalId } from './scenario';

/** The town's batch of merged branches deleted in one push (activities/merged-branches.ts). */
const MERGED_BRANCH_BATCH = 16;

export const agentScript = fileURLToPath(new URL('./agents/instant.sh', import.meta.url));
const floorBin = fileURLToPath(new URL('./agents/floor-bin', import.meta.url));

/** Times (ms since the epoch) of one bead of the floor run. */
export interface FloorBead {
  index: number;
  readyAt: number;
  mergeStartedAt: number;
  mergedAt: number;
}

export interface FloorRun {
  startedAt: number;
  makespanMs: number;
  gateRuns: number;
  beads: FloorBead[];
  /** From the start to the last merge (bench/cpu.ts); absent where /proc cannot be read. */
  cpu?: CpuSpent;
}

class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

export async function runFloor(options: {
  root: string;
  origin: string;
  n: number;
  width: number;
  gates: string[];
}): Promise<FloorRun> {
  const { root, origin, n, width, gates } = options;
  const mirror = join(root, 'mirror.git');
  const candidate = join(root, 'candidate');
  await git(root, 'init', '-q', '--bare', mirror);
  await git(mirror, 'remote', 'add', 'origin', origin);
  await git(mirror, 'fetch', '-q', 'origin');
  // Worktree bookkeeping and branch creation in one repository, one at a time (the town serializes them too).
  const mirrorLock = new Mutex();
  const mergeLock = new Mutex();
  const agentEnv = { ...process.env, ...GIT_IDENTITY, PATH: `${floorBin}:${process.env.PATH ?? '/usr/bin:/bin'}` };
  const beads: FloorBead[] = [];
  let gateRuns = 0;
  let merged: string[] = [];
  const cleanups: Promise<unknown>[] = [];
  const deleteMerged = () => {
    const branches = merged;
    merged = [];
    return mirrorLock.run(async () => {
      await git(mirror, 'push', '-q', 'origin', '--delete', ...branches);
      await git(mirror, 'worktree', 'prune');
    });
  };

  const merge = async (branch: string, head: string) => {
    const mergeStartedAt = Date.now();
    const base = (await git(mirror, 'rev-parse', 'refs/remotes/origin/main')).trim();
    if (existsSync(candidate)) await git(candidate, 'checkout', '-q', '--detach', base);
    else await mirrorLock.run(() => git(mirror, 'worktree', 'add', '-q', '--detach', candidate, base));
    await git(candidate, 'merge', '-q', '--no-ff', '-m', `Merge ${branch} into main`, head);
    if (gates.length) gateRuns++;
    for (const gate of gates) await exec('/bin/sh', ['-c', gate], { cwd: candidate });
    // Pushing from the mirror also moves its refs/remotes/origin/main, so the next bead starts from this merge.
    await git(candidate, 'push', '-q', 'origin', 'HEAD:refs/heads/main', `--force-with-lease=refs/heads/main:${base}`);
    return { mergeStartedAt, mergedAt: Date.now() };
  };

  const bead = async (index: number, readyAt: number): Promise<FloorBead> => {
    const id = `floor-${beadLocalId(index)}`;
    const branch = `gt/${id}`;
    const worktree = join(root, 'worktrees', id);
    mkdirSync(join(root, 'worktrees'), { recursive: true });
    await mirrorLock.run(() => git(mirror, 'worktree', 'add', '-q', '--detach', worktree, 'refs/remotes/origin/main'));
    await exec('/bin/sh', [agentScript], {
      cwd: worktree,
      env: { ...agentEnv, GT_BEAD_ID: id, GT_RUN_ID: `${id}/r1/a1` },
    });
    const head = (await git(worktree, 'rev-parse', 'HEAD')).trim();
    await git(worktree, 'push', '-q', 'origin', `${head}:refs/heads/${branch}`);
    const times = await mergeLock.run(() => merge(branch, head));
    merged.push(branch);
    cleanups.push(rm(worktree, { recursive: true, force: true }));
    if (merged.length >= MERGED_BRANCH_BATCH) cleanups.push(deleteMerged());
    return { index, readyAt, ...times };
  };

  const cpuAtStart = cpuMark();
  const startedAt = Date.now();
  // One lane per chain of the DAG (scenario.ts: bead i depends on bead i - width): a bead starts as soon as the
  // bead it depends on has merged.
  const lanes = Array.from({ length: Math.min(width, n) }, async (_, lane) => {
    let readyAt = startedAt;
    for (let i = lane; i < n; i += width) {
      const done = await bead(i, readyAt);
      beads.push(done);
      readyAt = done.mergedAt;
    }
  });
  await Promise.all(lanes);
  const cpu = cpuSpent(cpuAtStart, cpuMark());
  const endedAt = Math.max(...beads.map((b) => b.mergedAt));
  if (merged.length) cleanups.push(deleteMerged());
  await Promise.all(cleanups);
  const landed = await mergedWorkFiles(origin);
  if (landed !== n) throw new Error(`the floor script ended with ${landed} of ${n} beads' work on main`);
  return {
    startedAt,
    makespanMs: endedAt - startedAt,
    gateRuns,
    beads: beads.sort((a, b) => a.index - b.index),
    ...(cpu ? { cpu } : {}),
  };
}
