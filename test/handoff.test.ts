/**
 * `gt handoff`: a run ends on purpose and the next starts at once from its checkpoint, without using an attempt or a
 * backoff, up to the rig's maxHandoffs per bead. Real server, real agents (test/agents/run-handoff.sh), the real `gt`.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRepo } from './helpers/repo';
import { agentScript, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

describe('gt handoff', () => {
  it('starts the next run at once with the checkpoint in its prompt, without using an attempt', async () => {
    const repo = await createRepo();
    const dir = mkdtempSync(join(tmpdir(), 'gt-handoff-'));
    await t.addRig({
      name: 'handoff',
      repo: repo.origin,
      agent: agentScript('run-handoff'),
      env: { TEST_DIR: dir, HANDOFFS: '2' },
      // One attempt and an hour of backoff: a hand-off that counted as a failed attempt would fail the bead, and
      // one that waited for a backoff would not finish within the test's timeout.
      policy: { maxAttempts: 1, retryBackoff: '1h' },
    });
    const { handle } = await t.town.sling('handoff', { id: 'b-handoff', title: 'Work in three sittings' });
    const result = await handle.result();
    expect(result).toMatchObject({ status: 'closed' });

    const state = await t.town.beadState('b-handoff');
    expect(state.runs.map((r) => [r.runId, r.outcome])).toEqual([
      ['b-handoff/r1/a1', 'handed_off'],
      ['b-handoff/r1/a2', 'handed_off'],
      ['b-handoff/r1/a3', 'done'],
    ]);
    expect(state.handoffs).toBe(2);
    expect(state.runs[0]!.summary).toBe('handed off: part 1 of the work is done; do part 2 next');
    const third = readFileSync(join(dir, 'prompt-a3.md'), 'utf8');
    expect(third).toContain('- part 1 of the work is done; do part 2 next (saved by b-handoff/r1/a1)');
    expect(third).toContain('- part 2 of the work is done; do part 3 next (saved by b-handoff/r1/a2)');
    expect(readFileSync(join(dir, 'prompt-a1.md'), 'utf8')).not.toContain('part 1 of the work');
  });

  it('refuses a hand-off past the rig’s maxHandoffs with a line that says what to do', async () => {
    const repo = await createRepo();
    const dir = mkdtempSync(join(tmpdir(), 'gt-handoff-cap-'));
    await t.addRig({
      name: 'handoff-cap',
      repo: repo.origin,
      agent: agentScript('run-handoff'),
      env: { TEST_DIR: dir, HANDOFFS: '1', TRY_ONE_MORE: '1' },
      policy: { maxAttempts: 1, maxHandoffs: 1 },
    });
    const { handle } = await t.town.sling('handoff-cap', { id: 'b-handoff-cap', title: 'Hand off once only' });
    expect((await handle.result()).status).toBe('closed');
    const refused = readFileSync(join(dir, 'refused.out'), 'utf8');
    expect(refused).toContain('has used its 1 hand-offs (rig policy maxHandoffs): finish with gt done');
    expect(refused).not.toContain('accepted');
    const state = await t.town.beadState('b-handoff-cap');
    expect(state.runs.map((r) => r.outcome)).toEqual(['handed_off', 'done']);
    expect(state.handoffs).toBe(1);
  });
});
