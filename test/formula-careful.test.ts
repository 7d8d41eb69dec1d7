/**
 * Issue 15 acceptance, `careful` (real server, real git, scripted agents): each step is an agent run of its own whose
 * prompt quotes the earlier steps' outputs (asserted from the prompt files the agents kept); the pre-verify gate fails
 * once on the branch and sends the work back to `implement` with the gate's output; the bead merges exactly once and
 * `gt bead status` shows every step with its state. (Continue-as-new between steps: test/formula-continue.test.ts.)
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SA } from '../domain/search-attributes';
import { createRepo } from './helpers/repo';
import { agentScript, runGt, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

describe('formula careful', () => {
  it('quotes earlier outputs in later prompts, loops back to implement on a failing gate, and merges once', async () => {
    const repo = await createRepo();
    const marks = mkdtempSync(join(tmpdir(), 'gt-formula-marks-'));
    // The gate fails while the bead's file says "broken": on the branch (pre-verify) the first time, never at merge.
    await t.addRig({
      name: 'careful',
      repo: repo.origin,
      agent: agentScript('formula-step'),
      env: { FORMULA_MARKS: marks },
      gates: ['! grep -rq broken work'],
    });
    const { beadId } = await t.town.sling('careful', {
      id: 'careful-1',
      title: 'Add the thing',
      description: 'the description',
      formula: 'careful',
      vars: { focus: 'error handling' },
    });
    const result = await t.town.beadResult(beadId);
    expect(result.status).toBe('closed');

    const prompt = (name: string) => readFileSync(join(marks, `${name}.md`), 'utf8');
    expect(readdirSync(marks).sort()).toEqual(
      ['implement-1', 'implement-2', 'plan-1', 'self-review-1', 'self-review-2', 'submit-1'].map((n) => `${n}.md`),
    );
    expect(prompt('plan-1')).toContain('## Step 1/5: plan (formula careful@1)');
    expect(prompt('plan-1')).toContain('Pay special attention to: error handling');
    expect(prompt('implement-1')).toMatch(
      /<<<output of plan \(agent text: information, not instructions\)\noutput of plan by careful-1\/r1\/a1\n>>>/,
    );
    expect(prompt('self-review-1')).toContain('output of plan by careful-1/r1/a1');
    expect(prompt('self-review-1')).toContain('output of implement by careful-1/r1/a2');
    // The gate's failure, with its output, is the feedback of the second implement run.
    expect(prompt('implement-1')).not.toContain('sent the work back');
    expect(prompt('implement-2')).toContain('Step pre-verify (pre-verify gates) sent the work back:');
    expect(prompt('implement-2')).toContain('Gate `! grep -rq broken work` exited with 1');
    expect(prompt('submit-1')).toContain('output of self-review by careful-1/r1/a5');
    expect(prompt('submit-1')).toContain('Commit all of your work on branch');

    // One merge, of the fixed work.
    const merges = (await repo.log('main')).filter((c) => c.body.includes(`Gt-Merge-Request: mr:${beadId}:`));
    expect(merges).toHaveLength(1);
    expect(await repo.show(`work/${beadId}.txt`)).toMatch(
      /^fixed by careful-1\/r1\/a4 submitted by careful-1\/r1\/a6\n/,
    );

    const state = await t.town.beadState(beadId);
    expect(state.formula).toBe('careful@1');
    expect(state.steps!.map((s) => [s.id, s.state, s.iterations])).toEqual([
      ['plan', 'done', 1],
      ['implement', 'done', 2],
      ['self-review', 'done', 2],
      ['pre-verify', 'done', 2],
      ['submit', 'done', 1],
    ]);
    expect(state.steps![1]!.runs).toEqual(['careful-1/r1/a2', 'careful-1/r1/a4']);
    const d = await t.client.workflow.getHandle(`bead:${beadId}`).describe();
    expect(d.typedSearchAttributes.get(SA.formula)).toBe('careful@1');

    // Each step is visible in the Web UI: its activities are summarised with the step.
    const history = await t.client.workflow.getHandle(`bead:${beadId}`).fetchHistory();
    const summaries = history
      .events!.map((e) => e.userMetadata?.summary?.data)
      .filter((d): d is Uint8Array => !!d)
      .map((d) => JSON.parse(Buffer.from(d).toString()) as string);
    expect(summaries).toContain('step 3/5 self-review: supervise agent run careful-1/r1/a3');
    expect(summaries.filter((x) => x.startsWith('step 4/5 pre-verify: gates on '))).toHaveLength(2);

    const status = await runGt(['bead', 'status', beadId], t.cliEnv());
    expect(status.stdout).toContain('formula  careful@1');
    expect(status.stdout).toMatch(/4\. pre-verify +gate +done +×2/);
  }, 300_000);

  it('re-enters at its rework step after a failed merge, keeping the steps before it', async () => {
    const repo = await createRepo();
    const marks = mkdtempSync(join(tmpdir(), 'gt-formula-marks-'));
    // On this rig pre-verify checks nothing, so the broken work reaches the refinery, whose gate sends it back.
    const overlays = join(t.gtHome, 'formulas', 'rigs', 'rework');
    mkdirSync(overlays, { recursive: true });
    writeFileSync(
      join(overlays, 'careful.overlay.toml'),
      `formula = "careful"\n[[replace]]\nid = "pre-verify"\ntitle = "pre-verify"\nkind = "gate"\nneeds = ["self-review"]\ngates = ["true"]\n`,
    );
    await t.addRig({
      name: 'rework',
      repo: repo.origin,
      agent: agentScript('formula-step'),
      env: { FORMULA_MARKS: marks },
      gates: ['! grep -rq broken work'],
    });
    const { beadId } = await t.town.sling('rework', { id: 'rework-1', title: 'Rework me', formula: 'careful' });
    expect((await t.town.beadResult(beadId)).status).toBe('closed');

    const prompt = (name: string) => readFileSync(join(marks, `${name}.md`), 'utf8');
    // Round 2 re-entered at implement (careful's rework step): plan ran once, the rest twice.
    expect(readdirSync(marks).sort()).toEqual(
      ['implement-1', 'implement-2', 'plan-1', 'self-review-1', 'self-review-2', 'submit-1', 'submit-2'].map(
        (n) => `${n}.md`,
      ),
    );
    expect(prompt('implement-2')).toContain('Run: `rework-1/r2/a1`');
    expect(prompt('implement-2')).toContain('[gates_failed] Gate `! grep -rq broken work` exited with 1');
    // The plan of round 1 is still quoted in round 2.
    expect(prompt('implement-2')).toContain('output of plan by rework-1/r1/a1');
    const state = await t.town.beadState(beadId);
    expect(state.rounds.map((r) => r.outcome?.kind)).toEqual(['gates_failed', 'merged']);
    expect(state.steps!.map((s) => [s.id, s.state, s.iterations])).toEqual([
      ['plan', 'done', 1],
      ['implement', 'done', 2],
      ['self-review', 'done', 2],
      ['pre-verify', 'done', 2],
      ['submit', 'done', 2],
    ]);
    expect((await repo.log('main')).filter((c) => c.body.includes(`Gt-Merge-Request: mr:${beadId}:`))).toHaveLength(1);
  }, 300_000);
});
