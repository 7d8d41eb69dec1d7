/**
 * Issue 15 acceptance: kill -9 of the worker during step 3 of 5 (`careful`, self-review). The new worker replays the
 * bead: steps 1–2 are not run again (counted from the agents' start marks: one prompt copy per agent start), the live
 * step-3 agent is re-attached rather than restarted, the formula goes on to the end, and the bead merges once.
 * And the same during `explore`'s legs: two legs done and the third live when the worker dies — the done legs are not
 * run again, the live one is re-attached, the synthesis runs once and the bead merges once.
 * The worker is a real `gt worker` process with a fixed gateway port (the held agent's GT_GATEWAY_URL must stay valid).
 */
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createRepo } from './helpers/repo';
import {
  agentScript,
  eventually,
  FAST_POLICY,
  resultOrExplain,
  supervisionReattached,
  workerProcesses,
} from './helpers/town';

const workers = workerProcesses();

describe('a worker killed during a formula step', () => {
  it('never re-runs the steps already done, and the bead merges once', async () => {
    const marks = mkdtempSync(join(tmpdir(), 'gt-formula-kill-'));
    const host = await workers.host('fkill');
    const { town } = host;
    const repo = await createRepo();
    await town.addRig({
      name: 'fkill',
      repo: repo.origin,
      agent: agentScript('formula-step'),
      env: { FORMULA_MARKS: marks, FORMULA_HOLD: 'self-review' },
      policy: { ...FAST_POLICY, heartbeatTimeout: 3_000 },
    });

    const first = await host.start();
    const { handle } = await town.sling('fkill', {
      id: 'b-fkill',
      title: 'Survive a crash mid-formula',
      formula: 'careful',
    });
    await eventually(() => readdirSync(marks).includes('held'), 90_000, 'step 3 started and held');
    // The bead's current details carry the step: "step 3/5 self-review: waiting for gt done from run …".
    await eventually(
      async () => (await town.beadState('b-fkill')).waitingFor.startsWith('waiting for gt done from run b-fkill/r1/a3'),
      30_000,
      'step 3 supervised',
    );
    first.proc.kill('SIGKILL');
    await new Promise((resolve) => first.proc.once('exit', resolve));

    await host.start();
    await eventually(() => supervisionReattached(handle), 60_000, 'supervision re-attached on the new worker');
    writeFileSync(join(marks, 'release'), '');
    expect((await resultOrExplain(handle, workers.children, 120_000)).status).toBe('closed');

    // One agent start per step: plan and implement were not run again, self-review was adopted, not restarted.
    expect(
      readdirSync(marks)
        .filter((f) => f.endsWith('.md'))
        .sort(),
    ).toEqual(['implement-1.md', 'plan-1.md', 'self-review-1.md', 'submit-1.md']);
    const state = await town.beadState('b-fkill');
    expect(state.steps!.map((s) => [s.id, s.state, s.iterations])).toEqual([
      ['plan', 'done', 1],
      ['implement', 'done', 1],
      ['self-review', 'done', 1],
      ['pre-verify', 'done', 1],
      ['submit', 'done', 1],
    ]);
    expect(state.runs.map((r) => [r.runId, r.outcome])).toEqual([
      ['b-fkill/r1/a1', 'done'],
      ['b-fkill/r1/a2', 'done'],
      ['b-fkill/r1/a3', 'done'],
      ['b-fkill/r1/a4', 'done'],
    ]);
    expect((await repo.log()).filter((c) => c.body.includes('Gt-Merge-Request'))).toHaveLength(1);
  }, 300_000);

  it('never re-runs the legs already done, re-attaches the live one, and the bead merges once', async () => {
    const marks = mkdtempSync(join(tmpdir(), 'gt-formula-kill-legs-'));
    const host = await workers.host('fklegs');
    const { town } = host;
    const repo = await createRepo();
    await town.addRig({
      name: 'fklegs',
      repo: repo.origin,
      agent: agentScript('formula-step'),
      env: { FORMULA_MARKS: marks, FORMULA_HOLD: 'legs-leg3' },
      maxPolecats: 3,
      policy: { ...FAST_POLICY, heartbeatTimeout: 3_000 },
    });

    const first = await host.start();
    const { handle } = await town.sling('fklegs', {
      id: 'b-fklegs',
      title: 'Explore through a crash',
      formula: 'explore',
    });
    // Legs 1 and 2 are done (published), leg 3 is held live when the worker dies.
    await eventually(
      async () => {
        const legs = (await town.beadState('b-fklegs')).steps?.[0]?.legs;
        return readdirSync(marks).includes('held') && legs?.map((l) => l.state).join() === 'done,done,running';
      },
      90_000,
      'legs 1-2 done, leg 3 held',
    );
    first.proc.kill('SIGKILL');
    await new Promise((resolve) => first.proc.once('exit', resolve));

    await host.start();
    await eventually(() => supervisionReattached(handle), 60_000, 'supervision of leg 3 re-attached on the new worker');
    writeFileSync(join(marks, 'release'), '');
    expect((await resultOrExplain(handle, workers.children, 120_000)).status).toBe('closed');

    // One agent start per leg and one synthesis: nothing was run again.
    expect(
      readdirSync(marks)
        .filter((f) => f.endsWith('.md'))
        .sort(),
    ).toEqual(['legs-leg1-1.md', 'legs-leg2-1.md', 'legs-leg3-1.md', 'synthesis-1.md']);
    const state = await town.beadState('b-fklegs');
    expect(state.steps!.map((s) => [s.id, s.state, s.iterations])).toEqual([
      ['legs', 'done', 1],
      ['synthesis', 'done', 1],
    ]);
    expect(state.runs.map((r) => r.outcome)).toEqual(['done', 'done', 'done', 'done']);
    expect(state.runs).toHaveLength(4);
    expect((await repo.log()).filter((c) => c.body.includes('Gt-Merge-Request'))).toHaveLength(1);
  }, 300_000);
});
