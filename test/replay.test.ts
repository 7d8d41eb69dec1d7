/**
 * Replays recorded histories of real runs (test/histories, made by `npm run record-histories`) against today's
 * workflow code: a change that would break workflows already running fails here (DeterminismViolationError).
 * test/histories/must-fail/ holds histories no version of the code made (a recorded one with one command changed):
 * replaying them must fail, which shows the replay above would notice an incompatible change.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';
import { DeterminismViolationError } from '@temporalio/workflow';
import { Worker } from '@temporalio/worker';
import { describe, expect, inject, it } from 'vitest';

const dir = join(import.meta.dirname, 'histories');
const MUST_FAIL = 'must-fail/';
const all = readdirSync(dir, { recursive: true, encoding: 'utf8' })
  .filter((f) => f.endsWith('.json'))
  .sort();
/** The current recordings, and in subdirectories older ones kept so the old branches of patched() code replay too. */
const files = all.filter((f) => !f.startsWith(MUST_FAIL));
const incompatible = all.filter((f) => f.startsWith(MUST_FAIL));

const load = (f: string) => ({
  workflowId: f.replace(/\.json$/, ''),
  history: historyFromJSON(JSON.parse(readFileSync(join(dir, f), 'utf8'))),
});

async function replay(names: string[]) {
  const results: { workflowId: string; error?: unknown }[] = [];
  for await (const r of Worker.runReplayHistories(
    { workflowBundle: { codePath: inject('workflowBundlePath') } },
    names.map(load),
  )) {
    results.push({ workflowId: r.workflowId, error: r.error });
  }
  return results;
}

describe('replay of recorded histories', () => {
  it('has recorded histories to replay', () => {
    expect(files.filter((f) => !f.includes('/')).length).toBeGreaterThanOrEqual(11);
    expect(files.filter((f) => f.includes('/')).length).toBeGreaterThanOrEqual(11);
  });

  it('replays every recorded history without a determinism error', async () => {
    const results = await replay(files);
    expect(results.map((r) => r.workflowId).sort()).toEqual(files.map((f) => f.replace(/\.json$/, '')).sort());
    for (const r of results) expect(r.error, `${r.workflowId}: ${String(r.error)}`).toBeUndefined();
  });

  it('fails with a DeterminismViolationError on a history the code could not have made', async () => {
    // merge-request-merged.json with its first activity renamed (enqueueMergeRequest → announceMergeRequest): what a
    // rename without patched() does to merge requests already running.
    expect(incompatible).toEqual(['must-fail/merge-request-activity-renamed.json']);
    const [result] = await replay(incompatible);
    expect(result!.error).toBeInstanceOf(DeterminismViolationError);
    expect(String(result!.error)).toMatch(/announceMergeRequest|enqueueMergeRequest/);
  });
});
