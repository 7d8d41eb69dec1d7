/**
 * A merge request's candidate built ahead of its merge section (activities/merge-ahead.ts): the section takes it only
 * for its first ticket on the target its mirror names, runs the gates in it and lands exactly what they passed; anything
 * else is discarded and built as before. Real git, real gates through the process runtime, the activity run alone; the
 * last test runs a convoy on the real stack, where the run's supervision begins the build.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultPayloadConverter } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { aheadBuilder, createMergeActivities } from '../activities/merge';
import { CandidatesAhead } from '../activities/merge-ahead';
import { syncMirror } from '../activities/git';
import { ProcessRuntime } from '../agents/process-runtime';
import { type CandidateResult, MergeTicket } from '../domain/refinery';
import { RigConfig, type RigConfigInput } from '../domain/rig';
import { writeSpec } from './helpers/convoy';
import { createRepo } from './helpers/repo';
import { gateRecords, pushBranch, recordingGate, recordTargetMoves, targetTreesHeld } from './helpers/refinery';
import { agentScript, repoRoot, runGt, startTestTown, type TestTown } from './helpers/town';

async function rigAhead(settings: Partial<RigConfigInput> = {}) {
  const repo = await createRepo();
  await recordTargetMoves(repo.origin);
  const gates = mkdtempSync(join(tmpdir(), 'gt-ahead-gates-'));
  const rig = RigConfig.parse({
    name: 'ahead',
    repo: repo.origin,
    agent: 'true',
    // The second gate says where the gates ran.
    gates: [recordingGate(gates), `pwd >> ${gates}/cwd`],
    ...settings,
  });
  const gtHome = mkdtempSync(join(tmpdir(), 'gt-ahead-home-'));
  const ahead = new CandidatesAhead(aheadBuilder(gtHome));
  const { mergeCandidate } = createMergeActivities({
    gtHome,
    gtBinDir: join(repoRoot, 'bin'),
    runtimes: { process: new ProcessRuntime() },
    ahead,
  });
  const ticket = (beadId: string, headSha: string) =>
    MergeTicket.parse({
      mrId: `mr:${beadId}:1`,
      beadId,
      round: 1,
      title: beadId,
      branch: `gt/${beadId}`,
      headSha,
      targetBranch: 'main',
      enqueuedAt: 0,
    });
  /** A branch pushed to the repository and fetched into the mirror, as a run's import leaves it. */
  const published = async (beadId: string, files: Record<string, string>) => {
    const head = (await pushBranch(repo.origin, `gt/${beadId}`, files)).trim();
    await syncMirror(rig.name, rig.repo, gtHome);
    return ticket(beadId, head);
  };
  const merge = (...tickets: MergeTicket[]): Promise<CandidateResult> =>
    new MockActivityEnvironment().run(mergeCandidate, { rig, tickets });
  const cwds = () =>
    existsSync(join(gates, 'cwd')) ? readFileSync(join(gates, 'cwd'), 'utf8').trim().split('\n') : [];
  const aheadTree = join(gtHome, 'rigs', rig.name, 'candidates', 'ahead');
  /** The mirror fetched, as the next run's start or import would. */
  const fetchMirror = () => syncMirror(rig.name, rig.repo, gtHome);
  return { repo, gates, rig, ahead, published, merge, cwds, aheadTree, fetchMirror };
}

/** Every tree the target held was gated and passed. */
async function onlyGatedTrees(origin: string, gates: string) {
  const passed = new Set(
    gateRecords(gates)
      .filter((g) => g.result === 'pass')
      .map((g) => g.tree),
  );
  const held = await targetTreesHeld(origin);
  // The first entry is the repository's own first commit, never merged.
  return held.slice(0, -1).every((tree) => passed.has(tree));
}

describe('a candidate built ahead of its merge section', () => {
  it('is taken for its ticket: the gates run in its tree and the target moves to exactly its commit', async () => {
    const { repo, gates, rig, ahead, published, merge, cwds, aheadTree } = await rigAhead();
    const a = await published('a', { 'work/a.txt': 'a\n' });
    const built = await ahead.begin(rig, a);
    expect(built).toMatchObject({ targetSha: await repo.sha() });
    const result = await merge(a);
    expect(result).toMatchObject({ kind: 'merged', builtAhead: true, commit: built!.candidateSha, gateRuns: 1 });
    expect(await repo.sha()).toBe(built!.candidateSha);
    expect(await repo.show('work/a.txt')).toBe('a\n');
    expect(cwds()).toEqual([aheadTree]);
    expect(await onlyGatedTrees(repo.origin, gates)).toBe(true);
    // Discarded as the section ended.
    expect(existsSync(aheadTree)).toBe(false);
  });

  it('is discarded when the mirror names another target by the section, which builds on that one', async () => {
    const { repo, gates, rig, ahead, published, merge, cwds, aheadTree, fetchMirror } = await rigAhead();
    const b = await published('b', { 'work/b.txt': 'b\n' });
    const built = await ahead.begin(rig, b);
    expect(built).toBeDefined();
    await repo.commitDirect('outside.txt', 'outside\n', 'someone else');
    await fetchMirror();
    const result = await merge(b);
    expect(result).toMatchObject({ kind: 'merged', alreadyMerged: false, gateRuns: 1 });
    expect(result).not.toHaveProperty('builtAhead');
    expect(await repo.show('outside.txt')).toBe('outside\n');
    expect(await repo.show('work/b.txt')).toBe('b\n');
    expect(cwds()).not.toContain(aheadTree);
    expect(await onlyGatedTrees(repo.origin, gates)).toBe(true);
    expect(existsSync(aheadTree)).toBe(false);
  });

  it('loses its lease when the target moved where the mirror did not see it, and is built again on the new one', async () => {
    const { repo, gates, rig, ahead, published, merge } = await rigAhead();
    const c = await published('c', { 'work/c.txt': 'c\n' });
    expect(await ahead.begin(rig, c)).toBeDefined();
    await repo.commitDirect('outside.txt', 'outside\n', 'someone else');
    const result = await merge(c);
    // Gated in the tree built ahead, refused by the compare-and-swap, built again after a fetch and gated again.
    expect(result).toMatchObject({ kind: 'merged', alreadyMerged: false, gateRuns: 2 });
    expect(result).not.toHaveProperty('builtAhead');
    expect(await repo.show('outside.txt')).toBe('outside\n');
    expect(await repo.show('work/c.txt')).toBe('c\n');
    expect(await onlyGatedTrees(repo.origin, gates)).toBe(true);
  });

  it('is discarded by a section of other tickets, and is the first merge of a batch its ticket leads', async () => {
    const { repo, gates, rig, ahead, published, merge, cwds, aheadTree } = await rigAhead();
    const d = await published('d', { 'work/d.txt': 'd\n' });
    const e = await published('e', { 'work/e.txt': 'e\n' });
    expect(await ahead.begin(rig, d)).toBeDefined();
    expect(await merge(e)).not.toHaveProperty('builtAhead');
    expect(cwds()).toHaveLength(1);
    expect(cwds()).not.toContain(aheadTree);
    // d then merges as usual, on the target e moved.
    expect(await merge(d)).toMatchObject({ kind: 'merged', alreadyMerged: false });

    const f = await published('f', { 'work/f.txt': 'f\n' });
    const g = await published('g', { 'work/g.txt': 'g\n' });
    const built = await ahead.begin(rig, f);
    const batch = await merge(f, g);
    expect(batch).toMatchObject({ kind: 'merged', builtAhead: true, gateRuns: 1 });
    // The batch lands as one merge commit (the target, f's and g's heads as parents) of the tree built by merging g onto
    // f's merge, which was built ahead and is itself no commit of the target.
    const parents = execFileSync('git', ['rev-list', '--parents', '-n', '1', 'main'], {
      cwd: repo.origin,
      encoding: 'utf8',
    });
    expect(parents).not.toContain(built!.candidateSha);
    expect(await repo.show('work/f.txt')).toBe('f\n');
    expect(await repo.show('work/g.txt')).toBe('g\n');
    expect(cwds().at(-1)).toBe(aheadTree);
    expect(await onlyGatedTrees(repo.origin, gates)).toBe(true);
  });

  it('is not begun while a section of its rig runs, nor for a rig reviewed, merged by pull request or speculative', async () => {
    const { repo, gates, rig, ahead, published, merge } = await rigAhead();
    const h = await published('h', { 'work/h.txt': 'h\n' });
    const i = await published('i', { 'work/i.txt': 'i\n' });
    const section = merge(h);
    // The recording gate holds its lock for 0.2 s while it runs.
    while (!existsSync(join(gates, 'lock'))) await new Promise((r) => setTimeout(r, 10));
    expect(ahead.begin(rig, i)).toBeUndefined();
    expect(await section).toMatchObject({ kind: 'merged' });
    for (const other of [{ reviewer: 'true' }, { merge: 'pr' as const }, { speculation: 2 }])
      expect(ahead.begin(RigConfig.parse({ ...rig, ...other, batchSize: undefined }), i)).toBeUndefined();
    expect(await ahead.begin(rig, i)).toMatchObject({ targetSha: await repo.sha() });
  });

  it('builds nothing for a ticket that conflicts, and leaves the section to say so', async () => {
    const { repo, rig, ahead, published, merge, aheadTree, fetchMirror } = await rigAhead();
    const j = await published('j', { 'README.md': 'j\n' });
    await repo.commitDirect('README.md', 'main\n', 'someone else');
    await fetchMirror();
    expect(await ahead.begin(rig, j)).toBeUndefined();
    expect(existsSync(aheadTree)).toBe(false);
    expect(await merge(j)).toMatchObject({ kind: 'excluded', outcome: { kind: 'conflict' } });
  });
});

describe('a convoy on the real stack', () => {
  let t: TestTown | undefined;
  afterAll(async () => {
    await t?.stop();
  });

  it("merges each bead's candidate as its run's supervision built it, gating exactly what lands", async () => {
    t = await startTestTown();
    const repo = await createRepo();
    await recordTargetMoves(repo.origin);
    const gates = mkdtempSync(join(tmpdir(), 'gt-ahead-gates-'));
    await t.addRig({
      name: 'ahead-real',
      repo: repo.origin,
      agent: agentScript('convoy-instant'),
      gates: [recordingGate(gates)],
    });
    const spec = writeSpec({
      id: 'ahd',
      title: 'Built ahead',
      rig: 'ahead-real',
      beads: [
        { id: 'a', title: 'A' },
        { id: 'b', title: 'B', dependsOn: ['a'] },
      ],
    });
    const run = await runGt(['convoy', 'start', spec, '--wait'], t.cliEnv(), 120_000);
    expect(run.code, run.stderr).toBe(0);
    const history = await t.client.workflow.getHandle('refinery:ahead-real').fetchHistory();
    const sections = (history.events ?? []).flatMap((e) => {
      const payload = e.activityTaskCompletedEventAttributes?.result?.payloads?.[0];
      const result = payload && defaultPayloadConverter.fromPayload<CandidateResult>(payload);
      return result && 'kind' in result ? [result] : [];
    });
    expect(sections).toEqual([
      expect.objectContaining({ kind: 'merged', builtAhead: true, gateRuns: 1 }),
      expect.objectContaining({ kind: 'merged', builtAhead: true, gateRuns: 1 }),
    ]);
    expect(await onlyGatedTrees(repo.origin, gates)).toBe(true);
  });
});
