/**
 * Issue 15 acceptance, approval steps (`review-only`; real server, real git, scripted agents): the bead waits at its
 * approval step with no agent running; the timeout escalates once and the bead keeps waiting; `gt step approve`
 * lets it go on to the merge; `gt step reject --note` sends the work back to the review step with the note as
 * feedback. A decision for a step the bead is not waiting on is refused in one line. A cancelled bead retried resumes
 * at the approval it waited at (docs/formulas.md, "Retry and continue-as-new").
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, runGt, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
  // The town's overlay: the approval escalates after one second (the built-in waits a day).
  mkdirSync(join(t.gtHome, 'formulas'), { recursive: true });
  writeFileSync(
    join(t.gtHome, 'formulas', 'review-only.overlay.toml'),
    `formula = "review-only"\n[[replace]]\nid = "accept"\ntitle = "human approval"\nkind = "approval"\nneeds = ["review"]\ntimeout = "1s"\nloop = { from = "review", max = 3 }\n`,
  );
});
afterAll(async () => {
  await t?.stop();
});

async function slingReview(name: string) {
  const repo = await createRepo();
  const marks = mkdtempSync(join(tmpdir(), 'gt-formula-marks-'));
  await t.addRig({ name, repo: repo.origin, agent: agentScript('formula-step'), env: { FORMULA_MARKS: marks } });
  const { beadId } = await t.town.sling(name, { id: `${name}-1`, title: 'Review the parser', formula: 'review-only' });
  return { repo, marks, beadId };
}

const waitingAt = (beadId: string, iterations: number) =>
  eventually(
    async () => {
      const s = await t.town.beadState(beadId);
      const accept = s.steps?.find((x) => x.id === 'accept');
      return accept?.state === 'waiting' && accept.iterations === iterations && s;
    },
    90_000,
    `bead ${beadId} waiting for approval (${iterations})`,
  );

describe('approval steps', () => {
  it('wait with no agent running, escalate on timeout, and go on when approved', async () => {
    const { repo, beadId } = await slingReview('appr');
    const waiting = await waitingAt(beadId, 1);
    expect(waiting.currentRunId).toBeUndefined();
    expect(waiting.runs.every((r) => r.outcome !== 'running')).toBe(true);
    expect(waiting.waitingFor).toContain(`gt step approve ${beadId} accept`);
    const escalation = await eventually(
      async () => (await t.town.listEscalations()).find((e) => e.id === `bead-${beadId}-accept-r1-1`),
      60_000,
      'the approval escalation',
    );
    expect(escalation.reason).toContain(`has waited 1000 ms for approval of step 'accept'`);
    expect((await t.town.beadState(beadId)).status).toBe('in_progress');

    const wrong = await runGt(['step', 'approve', beadId, 'review'], t.cliEnv());
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toBe(
      `gt: bead ${beadId} is not waiting for approval of step 'review' (it waits for 'accept')\n`,
    );

    const ok = await runGt(['step', 'approve', beadId, 'accept', '--note', 'lgtm', '--by', 'ada'], t.cliEnv());
    expect(ok.stderr).toBe('');
    expect(ok.stdout).toBe(`bead ${beadId}: step accept approved\n`);
    expect((await t.town.beadResult(beadId)).status).toBe('closed');
    const state = await t.town.beadState(beadId);
    expect(state.steps!.find((s) => s.id === 'accept')).toMatchObject({
      state: 'done',
      output: 'approved by ada: lgtm',
    });
    expect(state.runs).toHaveLength(1);
    expect((await repo.log('main')).filter((c) => c.body.includes(`Gt-Merge-Request: mr:${beadId}:`))).toHaveLength(1);
    // Decided steps take no second decision.
    const again = await runGt(['step', 'approve', beadId, 'accept'], t.cliEnv());
    expect(again.code).toBe(1);
  }, 240_000);

  it('reject sends the work back to the review with the note, and a later approval merges it once', async () => {
    const { repo, marks, beadId } = await slingReview('rejc');
    await waitingAt(beadId, 1);
    const r = await runGt(['step', 'reject', beadId, 'accept', '--note', 'cover the lexer too'], t.cliEnv());
    expect(r.stdout).toBe(`bead ${beadId}: step accept rejected\n`);
    await waitingAt(beadId, 2);
    expect(readdirSync(marks).sort()).toEqual(['review-1.md', 'review-2.md']);
    const second = readFileSync(join(marks, 'review-2.md'), 'utf8');
    expect(second).toContain('Step accept (human approval) sent the work back:\nrejected by');
    expect(second).toContain(': cover the lexer too');
    expect(readFileSync(join(marks, 'review-1.md'), 'utf8')).not.toContain('cover the lexer too');
    expect((await runGt(['step', 'approve', beadId, 'accept'], t.cliEnv())).code).toBe(0);
    expect((await t.town.beadResult(beadId)).status).toBe('closed');
    expect((await repo.log('main')).filter((c) => c.body.includes(`Gt-Merge-Request: mr:${beadId}:`))).toHaveLength(1);
  }, 240_000);

  it('a cancelled bead retried waits at its approval again: the review is not run again, and it merges once', async () => {
    const { repo, marks, beadId } = await slingReview('rtry');
    await waitingAt(beadId, 1);
    expect((await runGt(['bead', 'cancel', beadId, '--reason', 'testing retry'], t.cliEnv())).code).toBe(0);
    expect((await t.town.beadState(beadId)).status).toBe('cancelled');
    const r = await runGt(['bead', 'retry', beadId, '--note', 'try again'], t.cliEnv());
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    // The new workflow run resumes at the step the cancelled one waited at: no agent runs for it.
    const waiting = await waitingAt(beadId, 2);
    expect(waiting.retries).toHaveLength(1);
    expect(waiting.steps!.find((s) => s.id === 'review')).toMatchObject({ state: 'done', iterations: 1 });
    expect(readdirSync(marks).filter((f) => f.endsWith('.md'))).toEqual(['review-1.md']);
    expect((await runGt(['step', 'approve', beadId, 'accept'], t.cliEnv())).code).toBe(0);
    expect((await t.town.beadResult(beadId)).status).toBe('closed');
    expect(readdirSync(marks).filter((f) => f.endsWith('.md'))).toEqual(['review-1.md']);
    expect((await repo.log('main')).filter((c) => c.body.includes(`Gt-Merge-Request: mr:${beadId}:`))).toHaveLength(1);
  }, 240_000);
});
