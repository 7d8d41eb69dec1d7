/**
 * An agent's exit is noticed when it happens, not at supervision's next status poll: with the poll ten minutes
 * apart, a bead's run still ends with the exit code its agent left. (Without the runtime's exit hint the bead would
 * give up waiting after gt done, stop the run, and record no exit code.)
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createRepo } from './helpers/repo';
import { startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown({ pollIntervalMs: 600_000 });
});
afterAll(async () => {
  await t?.stop();
});

it('records the exit of an agent that finished, long before the next status poll', async () => {
  const repo = await createRepo();
  await t.addRig({ name: 'exit-notice', repo: repo.origin });
  const { handle } = await t.town.sling('exit-notice', { id: 'b-exit-notice', title: 'Add a file' });
  expect((await handle.result()).status).toBe('closed');
  const state = await t.town.beadState('b-exit-notice');
  expect(state.runs.map((r) => [r.runId, r.outcome, r.exitCode])).toEqual([['b-exit-notice/r1/a1', 'done', 0]]);
});
