/**
 * Trees the worker is done with (a run's quarantine, a merge candidate, an earlier run's work tree, a reviewer's or a
 * formula leg's tree), removed off the caller's path.
 *
 * `rmSync` of a tree holds the worker's main thread, which runs every activity, heartbeat and the gateway, for as long
 * as the tree takes to delete (a merge candidate is a full checkout of the rig's repository), and each removal sat on
 * a bead's critical path: an import answered, a merge section returned, a rework's run started, only after it. A tree
 * is instead renamed into its rig's trash (one `rename` on the same file system) and deleted from there in the
 * background, by libuv's thread pool.
 *
 * Invariants:
 * - when `discardTree` returns, nothing is at the path: the caller may build there again at once;
 * - a removal that fails is a process warning, never thrown: the work the tree served is done (a merge landed, a
 *   branch was taken);
 * - what a process that died left in a trash goes with the first discard into that trash of the next process, and a
 *   tree it left where it worked goes with the retry of the activity it worked for (`discardEarlierAttempts`).
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { basename, join } from 'node:path';

/** Trash directories this process has emptied of what earlier processes left. */
const swept = new Set<string>();
const removals = new Set<Promise<void>>();

/** Moves the tree at `path` (if any) into `trash` and deletes it there in the background. */
export function discardTree(path: string, trash: string): void {
  const dest = join(trash, `${basename(path)}-${randomUUID()}`);
  try {
    mkdirSync(trash, { recursive: true });
    renameSync(path, dest);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    // A tree that cannot be moved (another file system, a parent not writable) is deleted where it is, as before.
    rmSync(path, { recursive: true, force: true });
    return;
  }
  removeLater(dest);
  if (swept.has(trash)) return;
  swept.add(trash);
  for (const entry of readdirSync(trash)) if (join(trash, entry) !== dest) removeLater(join(trash, entry));
}

/**
 * Discards the trees earlier attempts of an activity left at `pathOf(1)` … `pathOf(attempt - 1)`. An attempt discards
 * its own tree as it ends, but not when its worker died: nothing else would. Those attempts are over (the server
 * retried them); a process still working in one (a frozen worker's attempt, a gate it started) has an answer nobody
 * reads, and loses its tree. A first attempt looks at nothing.
 */
export function discardEarlierAttempts(pathOf: (attempt: number) => string, attempt: number, trash: string): void {
  for (let a = 1; a < attempt; a++) discardTree(pathOf(a), trash);
}

/** Resolves once every removal this process started has ended (for tests: the worker never waits for them). */
export async function trashEmptied(): Promise<void> {
  while (removals.size) await Promise.all(removals);
}

function removeLater(path: string): void {
  const removal = rm(path, { recursive: true, force: true, maxRetries: 2 })
    // A process warning rather than an activity's log: the removal may end after the activity did, and this module is
    // also part of the CLI's bundle (through activities/git.ts), which must not load the SDK.
    .catch((err: unknown) => process.emitWarning(`could not delete ${path}: ${String(err)}`, 'GtTrashWarning'))
    .finally(() => removals.delete(removal));
  removals.add(removal);
}
