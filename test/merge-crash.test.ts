/**
 * Issue 4 acceptance, crashes: a worker stopped in the middle of a merge section neither merges twice nor loses
 * the MR (the interrupted gate is killed, never left running beside the retry), and a merge activity that runs
 * again after its merge landed reports the earlier merge instead of making another, and discards the trees its
 * earlier attempts' dead workers left.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { createMergeActivities } from '../activities/merge';
import { ProcessRuntime } from '../agents/process-runtime';
import { mergeRequestWorkflowId } from '../domain/ids';
import { paths } from '../host/home';
import { MergeTicket } from '../domain/refinery';
import { RigConfig } from '../domain/rig';
import type { mergeRequestWorkflow } from '../workflows/merge-request';
import { processExists } from './helpers/pids';
import { createRepo } from './helpers/repo';
import { pushBranch, recordTargetMoves, startMergeRequest, targetTreesHeld, trailersOf } from './helpers/refinery';
import { eventually, repoRoot, startTestTown, type TestTown } from './helpers/town';

const towns: TestTown[] = [];
afterAll(async () => {
  for (const t of towns) await t.stop().catch(() => undefined);
});

/** A gate that marks each start, then blocks until the test releases it, then records that it finished. */
function blockingGate(dir: string): string {
  const script = join(dir, 'gate.sh');
  writeFileSync(
    script,
    `#!/bin/sh
n=$(ls "${dir}" | grep -c '^started-')
n=$((n + 1))
touch "${dir}/started-$n"
while [ ! -f "${dir}/release" ]; do sleep 0.1; done
echo "$n" >> "${dir}/finished"
`,
    { mode: 0o755 },
  );
  return script;
}

describe('a worker that dies mid-merge', () => {
  it('is replaced by another worker that re-gates and merges exactly once', async () => {
    const first = await startTestTown();
    towns.push(first);
    const repo = await createRepo();
    await recordTargetMoves(repo.origin);
    const dir = mkdtempSync(join(tmpdir(), 'gt-gates-'));
    const rig = await first.addRig({ name: 'crashy', repo: repo.origin, gates: [blockingGate(dir)] });
    const mr = await startMergeRequest(first, rig, { beadId: 'crash', files: { 'work/crash.txt': 'crash\n' } });
    await eventually(() => existsSync(join(dir, 'started-1')), 30_000, 'first gate run started');

    // The worker goes away while the gate runs: its merge section is interrupted, its gate process killed.
    await first.stop();
    const second = await startTestTown({ taskQueue: first.taskQueue, gtHome: first.gtHome });
    towns.push(second);
    await eventually(() => existsSync(join(dir, 'started-2')), 60_000, 'merge retried on the new worker');
    writeFileSync(join(dir, 'release'), '');

    const outcome = await second.client.workflow.getHandle<typeof mergeRequestWorkflow>(mr.workflowId).result();
    expect(outcome.kind).toBe('merged');
    // Only the retry's gate finished: the interrupted one did not run on beside it.
    expect(readFileSync(join(dir, 'finished'), 'utf8')).toBe('2\n');
    expect(
      (await trailersOf(repo.origin)).filter((tr) => tr.startsWith(`${mergeRequestWorkflowId('crash', 1)}@`)),
    ).toHaveLength(1);
    expect(await targetTreesHeld(repo.origin)).toHaveLength(1);
  });
});

/** The ticket of bead `bead`'s first round, its branch `gt/<bead>` at `headSha`. */
const ticketOf = (bead: string, headSha: string) =>
  MergeTicket.parse({
    mrId: `mr:${bead}:1`,
    beadId: bead,
    round: 1,
    title: bead,
    branch: `gt/${bead}`,
    headSha,
    targetBranch: 'main',
    enqueuedAt: 0,
  });

describe('a retried merge activity', () => {
  it('finds the merge it already made and reports it', async () => {
    const t = await startTestTown();
    towns.push(t);
    const repo = await createRepo();
    const rig = RigConfig.parse({ name: 'again', repo: repo.origin, agent: 'true' });
    const headSha = await pushBranch(repo.origin, 'gt/again', { 'work/again.txt': 'again\n' });
    const ticket = ticketOf('again', headSha);
    const env = new MockActivityEnvironment();
    const { mergeCandidate } = createMergeActivities({
      gtHome: t.gtHome,
      gtBinDir: join(repoRoot, 'bin'),
      runtimes: { process: new ProcessRuntime() },
    });

    const once = await env.run(mergeCandidate, { rig, tickets: [ticket] });
    expect(once).toMatchObject({ kind: 'merged', alreadyMerged: false });
    const tip = await repo.sha();
    const again = await env.run(mergeCandidate, { rig, tickets: [ticket] });
    expect(again).toMatchObject({
      kind: 'merged',
      alreadyMerged: true,
      commit: tip,
      merged: [{ mrId: 'mr:again:1', commit: tip }],
    });
    expect(await repo.sha()).toBe(tip);
    expect(await trailersOf(repo.origin)).toEqual([`mr:again:1@${headSha}`]);
  });

  it('discards the candidate trees its earlier attempts left behind', async () => {
    const gtHome = mkdtempSync(join(tmpdir(), 'gt-home-left-'));
    const repo = await createRepo();
    const rig = RigConfig.parse({ name: 'left', repo: repo.origin, agent: 'true' });
    const headSha = await pushBranch(repo.origin, 'gt/left', { 'work/left.txt': 'left\n' });
    const ticket = ticketOf('left', headSha);
    // What workers killed in attempts 1 and 2 left: their trees, a gate's output in them.
    for (const a of [1, 2]) {
      const tree = paths.candidate('left', `mr:left:1-a${a}`, gtHome);
      mkdirSync(join(tree, 'work'), { recursive: true });
      writeFileSync(join(tree, 'work', 'gate.log'), `attempt ${a}\n`);
    }
    const { mergeCandidate } = createMergeActivities({
      gtHome,
      gtBinDir: join(repoRoot, 'bin'),
      runtimes: { process: new ProcessRuntime() },
    });

    const third = await new MockActivityEnvironment({ attempt: 3 }).run(mergeCandidate, { rig, tickets: [ticket] });
    expect(third).toMatchObject({ kind: 'merged', alreadyMerged: false });
    expect(readdirSync(dirname(paths.candidate('left', 'any', gtHome))), 'a candidate tree left behind').toEqual([]);
  });

  it('stops a gate its earlier attempt left running', async () => {
    const gtHome = mkdtempSync(join(tmpdir(), 'gt-home-gate-left-'));
    const marks = mkdtempSync(join(tmpdir(), 'gt-gate-left-'));
    const repo = await createRepo();
    // The first gate run hangs (its shell's pid recorded); any later one passes.
    const gate = join(marks, 'gate.sh');
    writeFileSync(
      gate,
      `#!/bin/sh\nif mkdir "${marks}/first" 2>/dev/null; then echo $$ > "${marks}/pid"; exec sleep 600; fi\nexit 0\n`,
      { mode: 0o755 },
    );
    const rig = RigConfig.parse({ name: 'gate-left', repo: repo.origin, agent: 'true', gates: [gate] });
    const ticket = ticketOf('gate-left', await pushBranch(repo.origin, 'gt/gate-left', { 'work/g.txt': 'g\n' }));
    const { mergeCandidate } = createMergeActivities({
      gtHome,
      gtBinDir: join(repoRoot, 'bin'),
      runtimes: { process: new ProcessRuntime() },
    });

    // Attempt 1 is left hanging in its gate, as a killed (or frozen) worker's attempt is; the server retries it.
    const first = new MockActivityEnvironment({ attempt: 1 }).run(mergeCandidate, { rig, tickets: [ticket] });
    // Started, and recorded in its attempt's ledger with its handle.
    const ledger = paths.gateLedger('gate-left', 'mr:gate-left:1-a1', gtHome);
    const recorded = () =>
      existsSync(ledger) &&
      readFileSync(ledger, 'utf8')
        .split('\n')
        .filter(Boolean)
        .every((runId) => existsSync(join(paths.runDir(runId, gtHome), 'handle.json')));
    await eventually(() => existsSync(join(marks, 'pid')) && recorded(), 30_000, "the first attempt's gate");
    const pid = Number(readFileSync(join(marks, 'pid'), 'utf8'));
    expect(processExists(pid)).toBe(true);
    const second = await new MockActivityEnvironment({ attempt: 2 }).run(mergeCandidate, { rig, tickets: [ticket] });
    expect(second).toMatchObject({ kind: 'merged', alreadyMerged: false });
    expect(processExists(pid), "the first attempt's gate still runs").toBe(false);
    // What attempt 1 answers is nobody's now: its gate was stopped under it.
    expect(await first).toMatchObject({ kind: 'gates_failed' });
    expect(readdirSync(dirname(paths.gateLedger('gate-left', 'any', gtHome))), 'a ledger left behind').toEqual([]);
  });
});
