/**
 * Issue 12: the bundled scripted agent `bin/gt-example-agent` (what the README offers to try a town without an AI
 * CLI), run by its bare name as a rig's `--agent` — found on the run's PATH next to `gt` — with real beads, processes
 * and git. `npm run demo` runs it on the process runtime (test/demo.test.ts); here: a title full of shell
 * metacharacters, a rework round (it must commit again on its own branch), its `gt progress` and `gt done` reaching
 * the bead, the rig's git identity on its commit, and the sandbox runtime (bubblewrap) where it can run.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SandboxRuntime } from '../agents/sandbox-runtime';
import { createRepo } from './helpers/repo';
import { git } from './helpers/refinery';
import { agentScript, startTestTown, type TestTown } from './helpers/town';

const sandbox = await new SandboxRuntime().available();
if (!sandbox.ok) console.warn(`gt-example-agent in the sandbox skipped: ${sandbox.reason}`);

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

describe('gt-example-agent', () => {
  it('works a bead through a rework round: its note names the title and run, its commits the rig identity', async () => {
    const repo = await createRepo();
    const base = await repo.sha();
    const reviews = mkdtempSync(join(tmpdir(), 'gt-example-'));
    await t.addRig({
      name: 'example',
      repo: repo.origin,
      agent: 'gt-example-agent',
      // Requests changes in round 1, approves round 2: the agent must write and commit again on its own branch.
      reviewer: agentScript('reviewer-picky'),
      env: { TEST_DIR: reviews },
      gitIdentity: { name: 'Example Rig', email: 'example@rig.test' },
    });
    // Quotes, $, backticks and & must reach the note and the commit literally (the agent reads the title from its prompt).
    const title = 'Fix "quotes", $HOME & `uname` in the title';
    const { handle } = await t.town.sling('example', { id: 'ex-1', title });
    const result = await handle.result();
    expect(result.status).toBe('closed');

    const state = await t.town.beadState('ex-1');
    expect(state.rounds.map((r) => r.outcome?.kind)).toEqual(['changes_requested', 'merged']);
    expect(state.runs.map((r) => [r.runId, r.outcome])).toEqual([
      ['ex-1/r1/a1', 'done'],
      ['ex-1/r2/a1', 'done'],
    ]);
    for (const run of state.runs) {
      expect(run.summary).toBe('wrote beads/ex-1.md');
      expect(run.lastProgress).toMatch(/^reading \/.*prompt\.md$/);
    }
    expect(await repo.show('beads/ex-1.md')).toBe(`${title}\n\nImplemented by run ex-1/r2/a1.\n`);
    // One commit per round on the agent's branch, each with the trailers it writes, by the rig's identity.
    const log = await git(repo.origin, [
      'log',
      '--reverse',
      '--no-merges',
      '--format=%B%an <%ae>|%cn <%ce>%x1e',
      `${base}..main`,
    ]);
    const identity = 'Example Rig <example@rig.test>';
    expect(
      log
        .split('\x1e')
        .map((c) => c.trim())
        .filter(Boolean),
    ).toEqual([1, 2].map((round) => `${title}\n\nBead: ex-1\n\nRun: ex-1/r${round}/a1\n${identity}|${identity}`));
    expect(readFileSync(join(reviews, 'reviews'), 'utf8').trim().split('\n')).toHaveLength(2);
  });

  it.runIf(sandbox.ok)('works a bead in the sandbox runtime (bubblewrap)', async () => {
    const repo = await createRepo();
    await t.addRig({ name: 'example-sbx', repo: repo.origin, agent: 'gt-example-agent', runtime: 'sandbox' });
    const { handle } = await t.town.sling('example-sbx', { id: 'ex-sbx', title: 'Contained example' });
    const result = await handle.result();
    expect(result.status, result.reason).toBe('closed');
    expect(await repo.show('beads/ex-sbx.md')).toBe('Contained example\n\nImplemented by run ex-sbx/r1/a1.\n');
    expect((await t.town.beadState('ex-sbx')).runs[0]).toMatchObject({
      outcome: 'done',
      summary: 'wrote beads/ex-sbx.md',
    });
  });
});
