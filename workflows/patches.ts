/**
 * Patch baselines: what a workflow type's `patched()` ids cost its new histories, paid once.
 *
 * Every `patched()` id a workflow run takes writes two events into its history: the marker, and the
 * `TemporalChangeVersion` search-attribute upsert the SDK's core adds to it (not configurable). Before its baseline a
 * convoy bead took four on its happy path (eight of its ≈ 70 events) only to tell replay that it did not start before
 * those changes. A baseline is one more id that stands for a fixed list of them: a run asks it once, as it starts, and a
 * run that records its marker takes every listed change's new branch without asking again (two events in all).
 *
 * Why replay stays exact:
 * - A run from before the baseline has no baseline marker: asked at its start, `patched()` answers false while
 *   replaying, and every listed id is asked where it always was, taking the branch its own markers recorded.
 * - A run that recorded the baseline recorded no listed marker: replayed, it answers true at its start again and
 *   asks nothing else, as when it ran.
 * - The answer is taken once, at the start of the run, and kept: a run from before the baseline that goes on running
 *   on new code (not replaying any more) still asks each id where it always did — `patched()` of an id first asked
 *   live answers true, as every patch does for a running workflow — never the baseline again.
 * - An id added after a baseline is not on its list: it is asked (and recorded) on its own until a later baseline
 *   lists it. A baseline's list never changes once released: a new list is a new baseline id, asked before the older
 *   ones (patchesFrom), so a run from before it still finds the one it recorded.
 *
 * Rolling a worker back to code from before a baseline is as unsafe as rolling back past any patch: that code would
 * replay a baseline run's history without the markers it looks for.
 */
import { patched } from '@temporalio/workflow';

/** A baseline: its own patched() id and the ids of the changes it stands for (never changed once released). */
export interface PatchBaseline {
  readonly id: string;
  readonly covers: readonly string[];
}

/** Whether this workflow run takes a patch's new branch. */
export interface Patches {
  has(patchId: string): boolean;
}

/**
 * Asks the baselines, newest first, and stops at the first the run recorded (call once, as the run starts, before any
 * command that depends on a listed change). A new run records only the newest; a run from before it replays its own
 * (the newer ones answer false while replaying, as any patch absent from a history does). Each baseline lists every
 * change of the ones before it, so the newest stands for them all.
 */
export function patchesFrom(...baselines: readonly [PatchBaseline, ...PatchBaseline[]]): Patches {
  const recorded = baselines.find((b) => patched(b.id));
  const covered = new Set(recorded?.covers);
  return { has: (patchId) => covered.has(patchId) || patched(patchId) };
}
