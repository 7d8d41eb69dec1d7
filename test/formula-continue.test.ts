/**
 * Issue 15, durability across workflow runs (real server, real git, scripted agents: test/agents/formula-step.sh): a
 * formula bead past its history threshold continues as new between its steps and never runs a finished step again;
 * a formula bead that failed at a step and is retried resumes at that step (the steps before it are not run again),
 * and `--fresh` starts the formula over; a loop's count and feedback cross the hand-overs; a single session retried
 * goes on at its first unreported step. Each merges once. Agent starts are counted from the prompt copies the
 * scripted agent keeps (one per start: `<step>-<n>.md`).
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { retryBead } from '../client/beads';
import { formulaOf } from '../client/town';
import type { BeadResult } from '../domain/bead';
import type { RigConfig } from '../domain/rig';
import { beadStart } from '../domain/starts';
import { createRepo } from './helpers/repo';
import { agentScript, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
  mkdirSync(join(t.gtHome, 'formulas'), { recursive: true });
  writeFileSync(
    join(t.gtHome, 'formulas', 'walk.toml'),
    `name = "walk"\nversion = 1\nsession = "single"\n[[steps]]\nid = "plan"\ntitle = "plan"\nkind = "agent"\nprompt = "Plan {{bead.title}}"\n[[steps]]\nid = "implement"\ntitle = "implement"\nkind = "agent"\nneeds = ["plan"]\nprompt = "Implement: {{steps.plan.output}}"\n`,
  );
});
afterAll(async () => {
  await t?.stop();
});

const starts = (marks: string) =>
  readdirSync(marks)
    .filter((f) => f.endsWith('.md'))
    .sort();
const merges = async (repo: Awaited<ReturnType<typeof createRepo>>, beadId: string) =>
  (await repo.log('main')).filter((c) => c.body.includes(`Gt-Merge-Request: mr:${beadId}:`));

/** A rig whose agent is the formula-step script; FORMULA_FAIL names a step that fails until `fixed` exists. */
async function formulaRig(name: string, env: Record<string, string> = {}) {
  const repo = await createRepo();
  const marks = mkdtempSync(join(tmpdir(), 'gt-formula-continue-'));
  const rig = await t.addRig({
    name,
    repo: repo.origin,
    agent: agentScript('formula-step'),
    env: { FORMULA_MARKS: marks, ...env },
    gates: ['test -d work'],
    policy: { maxAttempts: 1 },
  });
  return { repo, marks, rig };
}

/** Starts a `careful` bead that hands over past 20 history events, and waits for its result. */
async function runHandingOver(beadId: string, title: string, rig: RigConfig): Promise<BeadResult> {
  const start = beadStart({
    taskQueue: t.taskQueue,
    input: {
      bead: { id: beadId, title },
      rig,
      formula: formulaOf(rig, 'careful', undefined),
      continueAsNewAfterEvents: 20,
    },
  });
  await t.client.workflow.start(start.workflowType, start.options);
  return (await t.client.workflow.getHandle(`bead:${beadId}`).result()) as BeadResult;
}

describe('a formula bead across workflow runs', () => {
  it('continues as new between its steps, runs each step once and merges once', async () => {
    const { repo, marks, rig } = await formulaRig('fcan');
    const beadId = 'b-fcan';
    expect((await runHandingOver(beadId, 'A careful bead over many histories', rig)).status).toBe('closed');

    const state = await t.town.beadState(beadId);
    // Past 20 events after every agent step: the bead handed over before implement, self-review and pre-verify.
    expect(state.continuedAsNew).toBeGreaterThanOrEqual(3);
    expect(state.steps!.map((s) => [s.id, s.state, s.iterations])).toEqual([
      ['plan', 'done', 1],
      ['implement', 'done', 1],
      ['self-review', 'done', 1],
      ['pre-verify', 'done', 1],
      ['submit', 'done', 1],
    ]);
    expect(state.runs.map((r) => [r.runId, r.outcome])).toEqual([
      [`${beadId}/r1/a1`, 'done'],
      [`${beadId}/r1/a2`, 'done'],
      [`${beadId}/r1/a3`, 'done'],
      [`${beadId}/r1/a4`, 'done'],
    ]);
    expect(starts(marks)).toEqual(['implement-1.md', 'plan-1.md', 'self-review-1.md', 'submit-1.md']);
    // The outputs crossed the hand-overs: the last step's prompt quotes the self-review's.
    expect(readFileSync(join(marks, 'submit-1.md'), 'utf8')).toContain(`output of self-review by ${beadId}/r1/a3`);

    const executions: string[] = [];
    for await (const wf of t.client.workflow.list({ query: `WorkflowId = 'bead:${beadId}'` }))
      executions.push(wf.status.name);
    expect(executions.filter((s) => s === 'CONTINUED_AS_NEW')).toHaveLength(state.continuedAsNew!);
    expect(executions.filter((s) => s === 'COMPLETED')).toHaveLength(1);
    expect(await merges(repo, beadId)).toHaveLength(1);
  }, 300_000);

  it('carries a loop across its hand-overs: the loop back to implement counts once, and the bead merges once', async () => {
    // The pre-verify gate fails on the first implement's "broken" and sends the work back to implement once.
    const { repo, marks, rig } = await formulaRig('floop');
    const beadId = 'b-floop';
    const looping = { ...rig, gates: ['! grep -rq broken work'] };
    expect((await runHandingOver(beadId, 'A careful bead looping over several histories', looping)).status).toBe(
      'closed',
    );
    const state = await t.town.beadState(beadId);
    expect(state.continuedAsNew).toBeGreaterThanOrEqual(4);
    expect(state.steps!.map((s) => [s.id, s.state, s.iterations])).toEqual([
      ['plan', 'done', 1],
      ['implement', 'done', 2],
      ['self-review', 'done', 2],
      ['pre-verify', 'done', 2],
      ['submit', 'done', 1],
    ]);
    expect(starts(marks)).toEqual([
      'implement-1.md',
      'implement-2.md',
      'plan-1.md',
      'self-review-1.md',
      'self-review-2.md',
      'submit-1.md',
    ]);
    // The second implement got the gate's complaint as its feedback, and the loop used stayed counted to the end.
    expect(readFileSync(join(marks, 'implement-2.md'), 'utf8')).toContain(
      'Step pre-verify (pre-verify gates) sent the work back',
    );
    expect(state.formulaAt).toMatchObject({ round: 1, next: 5, loopsUsed: { 'pre-verify': 1 } });
    expect(await merges(repo, beadId)).toHaveLength(1);
    expect(await repo.show(`work/${beadId}.txt`)).not.toContain('broken');
  }, 300_000);

  it('retried after it failed at a step, resumes at that step and merges once', async () => {
    const { repo, marks } = await formulaRig('fretry', { FORMULA_FAIL: 'self-review' });
    const beadId = 'b-fretry';
    const { handle } = await t.town.sling('fretry', { id: beadId, title: 'Fails at self-review', formula: 'careful' });
    const failed = await handle.result();
    expect(failed.status).toBe('failed');
    expect(failed.reason).toContain('step 3/5 self-review');
    expect((await t.town.beadState(beadId)).formulaAt).toMatchObject({ round: 1, next: 2 });

    writeFileSync(join(marks, 'fixed'), '');
    const retry = await retryBead(t.town, beadId, { note: 'the reviewer is fixed', by: 'tester' });
    expect(retry.retry).toBe(1);
    expect((await t.town.beadResult(beadId)).status).toBe('closed');

    const state = await t.town.beadState(beadId);
    expect(state.steps!.map((s) => [s.id, s.state, s.iterations])).toEqual([
      ['plan', 'done', 1],
      ['implement', 'done', 1],
      ['self-review', 'done', 2],
      ['pre-verify', 'done', 1],
      ['submit', 'done', 1],
    ]);
    expect(state.runs.map((r) => [r.runId, r.outcome])).toEqual([
      [`${beadId}/r1/a1`, 'done'],
      [`${beadId}/r1/a2`, 'done'],
      [`${beadId}/r1/a3`, 'exited'],
      [`${beadId}/r2/a1`, 'done'],
      [`${beadId}/r2/a2`, 'done'],
    ]);
    // Plan and implement ran once; the self-review twice (the failed start and the retry's); the submit once.
    expect(starts(marks)).toEqual([
      'implement-1.md',
      'plan-1.md',
      'self-review-1.md',
      'self-review-2.md',
      'submit-1.md',
    ]);
    const resumed = readFileSync(join(marks, 'self-review-2.md'), 'utf8');
    expect(resumed).toContain(`output of plan by ${beadId}/r1/a1`);
    expect(resumed).toContain('the reviewer is fixed');
    expect(await merges(repo, beadId)).toHaveLength(1);
  }, 300_000);

  it('retried with --fresh, starts the formula over and merges once', async () => {
    const { repo, marks } = await formulaRig('ffresh', { FORMULA_FAIL: 'self-review' });
    const beadId = 'b-ffresh';
    const { handle } = await t.town.sling('ffresh', { id: beadId, title: 'Fails, then fresh', formula: 'careful' });
    expect((await handle.result()).status).toBe('failed');

    writeFileSync(join(marks, 'fixed'), '');
    await retryBead(t.town, beadId, { fresh: true, by: 'tester' });
    expect((await t.town.beadResult(beadId)).status).toBe('closed');

    const state = await t.town.beadState(beadId);
    expect(state.steps!.map((s) => [s.id, s.state, s.iterations])).toEqual([
      ['plan', 'done', 1],
      ['implement', 'done', 1],
      ['self-review', 'done', 1],
      ['pre-verify', 'done', 1],
      ['submit', 'done', 1],
    ]);
    expect(state.runs.map((r) => r.runId)).toEqual([1, 2, 3, 4].map((a) => `${beadId}/r2/a${a}`));
    expect(starts(marks)).toEqual([
      'implement-1.md',
      'implement-2.md',
      'plan-1.md',
      'plan-2.md',
      'self-review-1.md',
      'self-review-2.md',
      'submit-1.md',
    ]);
    expect(await merges(repo, beadId)).toHaveLength(1);
  }, 300_000);

  it('of one run walking its steps (session = "single"), retried, goes on at the first step not reported', async () => {
    const repo = await createRepo();
    const marks = mkdtempSync(join(tmpdir(), 'gt-formula-continue-'));
    await t.addRig({
      name: 'fwalk',
      repo: repo.origin,
      agent: agentScript('formula-walk'),
      env: { FORMULA_MARKS: marks, WALK_CRASH_AFTER: 'plan' },
      policy: { maxAttempts: 1 },
    });
    const beadId = 'b-fwalk';
    const { handle } = await t.town.sling('fwalk', { id: beadId, title: 'Walk, fall, walk on', formula: 'walk' });
    expect((await handle.result()).status).toBe('failed');
    await retryBead(t.town, beadId, { by: 'tester' });
    expect((await t.town.beadResult(beadId)).status).toBe('closed');

    const state = await t.town.beadState(beadId);
    expect(state.steps!.map((s) => [s.id, s.state, s.iterations, s.output])).toEqual([
      ['plan', 'done', 1, `output of plan by ${beadId}/r1/a1`],
      // Begun once by the failed run (it was next when that run died) and once by the retry's.
      ['implement', 'done', 2, `output of implement by ${beadId}/r2/a1`],
    ]);
    // The retry's run found plan ticked in its checklist and reported implement only.
    expect(readFileSync(join(marks, 'walk-2.md'), 'utf8')).toContain('- [x] 1. `plan`');
    expect(readFileSync(join(marks, 'answers'), 'utf8').match(/step plan done/g)).toHaveLength(1);
    expect(await merges(repo, beadId)).toHaveLength(1);
  }, 300_000);
});
