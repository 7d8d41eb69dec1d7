/**
 * Issue 4, the PR strategy, against a fake GitHub API (a real HTTP server with real merges into the test repository)
 * and real beads: the refinery opens the pull request and moves on, the merge request follows it with durable timers.
 * A PR waiting on a human never delays other MRs (failure class 5); review and failing checks come back as rework on
 * the same branch and the same PR; auto-merge goes through the merge API; GitHub's 5xx, rate limits and slow answers
 * are retried; a PR closed by a human is never reopened; the token never reaches workflow history.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mergeRequestStateQuery } from '../domain/messages';
import { paths } from '../host/home';
import { startFakeGitHub, type FakeGitHub } from './helpers/fake-github';
import { refineryState } from './helpers/refinery';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
let fake: FakeGitHub | undefined;
beforeAll(async () => {
  t = await startTestTown();
});
afterEach(async () => {
  await fake?.stop();
  fake = undefined;
});
afterAll(async () => {
  await t?.stop();
  delete process.env.GITHUB_TOKEN;
  delete process.env.GITHUB_API_URL;
});

async function prRig(name: string, forge: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) {
  const repo = await createRepo();
  fake = await startFakeGitHub({ repository: `acme/${name}`, origin: repo.origin });
  // The worker reads the token from its own environment (this process): never from the rig or a payload. It sends
  // it only to the origins its own GITHUB_API_URL names; plain http only to a loopback server named there.
  process.env.GITHUB_TOKEN = fake.token;
  process.env.GITHUB_API_URL = fake.url;
  await t.addRig({
    name,
    repo: repo.origin,
    merge: 'pr',
    forge: { repository: `acme/${name}`, apiUrl: fake.url, pollInterval: 300, requestTimeout: 1500, ...forge },
    ...extra,
  });
  return { repo, fake };
}

const pullOf = (f: FakeGitHub, beadId: string) =>
  eventually(() => f.pullForBranch(`gt/${beadId}`), 60_000, `pull request for ${beadId}`);
const mrPhase = async (mrId: string) => (await t.client.workflow.getHandle(mrId).query(mergeRequestStateQuery)).phase;

/** Every text and byte string in a workflow's history, decoded: what an attacker with history access could read. */
async function historyText(workflowId: string): Promise<string> {
  const history = await t.client.workflow.getHandle(workflowId).fetchHistory();
  const parts: string[] = [];
  const walk = (v: unknown) => {
    if (v instanceof Uint8Array) parts.push(Buffer.from(v).toString('utf8'));
    else if (typeof v === 'string') parts.push(v);
    else if (v && typeof v === 'object') Object.values(v).forEach(walk);
  };
  walk(history);
  return parts.join('\n');
}

describe('merging through GitHub pull requests', () => {
  it('never lets a PR waiting on a human delay other MRs, and brings review feedback back on the same PR', async () => {
    const { fake: gh } = await prRig('prs');
    const a = await t.town.sling('prs', { id: 'pr-a', title: 'Waits for a human' });
    const prA = await pullOf(gh, 'pr-a');
    await eventually(async () => (await mrPhase('mr:pr-a:1')) === 'pull_request');

    const b = await t.town.sling('prs', { id: 'pr-b', title: 'Goes first' });
    const prB = await pullOf(gh, 'pr-b');
    // A's pull request holds nothing: the refinery is idle with an empty queue while A waits.
    const q = await eventually(async () => {
      const s = await refineryState(t, 'prs');
      return s.pullRequests === 2 && !s.section ? s : undefined;
    });
    expect(q.queue).toEqual([]);
    const mergeCommit = await gh.merge(prB.number);
    const rb = await b.handle.result();
    expect(rb).toMatchObject({ status: 'closed', commit: mergeCommit });
    expect(await mrPhase('mr:pr-a:1')).toBe('pull_request');

    // A human asks for changes on A's head: rework on the same branch, and the same PR follows the new head.
    await gh.review(prA.number, 'alice', 'CHANGES_REQUESTED', 'Rename the output file, please.');
    await eventually(async () => (await t.town.beadState('pr-a')).round === 2, 60_000, 'pr-a back in rework');
    await eventually(
      async () => (await mrPhase('mr:pr-a:2').catch(() => undefined)) === 'pull_request',
      60_000,
      'round 2 following the PR',
    );
    expect(gh.pulls.filter((p) => p.head === 'gt/pr-a')).toHaveLength(1);
    expect(await gh.headSha(prA)).toBe((await t.town.beadState('pr-a')).rounds[1]!.headSha);
    expect(readFileSync(join(paths.agentDir('pr-a/r2/a1', t.gtHome), 'prompt.md'), 'utf8')).toContain(
      'alice: Rename the output file, please.',
    );
    // The answered review (on the old head) does not bounce round 2; the human merges.
    await gh.review(prA.number, 'alice', 'APPROVED');
    const mergedA = await gh.merge(prA.number);
    const ra = await a.handle.result();
    expect(ra).toMatchObject({ status: 'closed', commit: mergedA });
    expect((await t.town.beadState('pr-a')).rounds.map((r) => r.outcome?.kind)).toEqual([
      'changes_requested',
      'merged',
    ]);

    // The token authenticated every call, and is in no workflow's history.
    expect(gh.requests.every((r) => r.authorization === `token ${gh.token}`)).toBe(true);
    for (const id of ['bead:pr-a', 'mr:pr-a:1', 'mr:pr-a:2', 'bead:pr-b', 'mr:pr-b:1', 'refinery:prs'])
      expect(await historyText(id)).not.toContain(gh.token);
  });

  it('sends failing checks back as rework, auto-merges once green and approved, and rides out 5xx, rate limits and slow answers', async () => {
    const { fake: gh } = await prRig('auto', { autoMerge: true, autoMergeDelay: 500 });
    gh.failNext(2, 502, { match: /^POST \/repos\/acme\/auto\/pulls$/ });
    gh.failNext(1, 403, {
      match: /^GET \/repos\/acme\/auto\/pulls\/\d+$/,
      headers: { 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': String(Math.ceil(Date.now() / 1000) + 1) },
    });
    gh.failNext(1, 429, { match: /check-runs$/, headers: { 'retry-after': '1' } });
    gh.slowNext(1, 4000, /reviews$/);
    const c = await t.town.sling('auto', { id: 'pr-c', title: 'Checked work' });
    const pr = await pullOf(gh, 'pr-c');
    gh.setCheck(await gh.headSha(pr), 'ci/test', 'completed', 'failure');
    await eventually(async () => (await t.town.beadState('pr-c')).round === 2, 60_000, 'pr-c back in rework');
    expect((await t.town.beadState('pr-c')).rounds[0]!.outcome).toMatchObject({
      kind: 'gates_failed',
      gate: 'GitHub checks: ci/test',
    });

    await eventually(
      async () => (await mrPhase('mr:pr-c:2').catch(() => undefined)) === 'pull_request',
      60_000,
      'round 2 following the PR',
    );
    const head2 = await gh.headSha(pr);
    gh.setCheck(head2, 'ci/test', 'completed', 'success');
    await gh.review(pr.number, 'bob', 'APPROVED');
    const result = await c.handle.result();
    expect(result.status).toBe('closed');
    expect(gh.pull(pr.number)).toMatchObject({ merged: true, mergeCommitSha: result.commit });
    const merges = gh.requests.filter((r) => r.method === 'PUT');
    expect(merges).toHaveLength(1);
    expect(merges[0]!.body).toMatchObject({ sha: head2, merge_method: 'merge' });
    // The injected failures really happened and were retried.
    expect(gh.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/pulls'))).toHaveLength(3);
    expect(gh.pulls).toHaveLength(1);
  });

  it('sends a pull request that became unmergeable back for rework on the same branch', async () => {
    const { repo, fake: gh } = await prRig('drifting', {}, { agent: agentScript('refinery-conflict') });
    const e = await t.town.sling('drifting', { id: 'pr-e', title: 'Write shared.txt' });
    const pr = await pullOf(gh, 'pr-e');
    await eventually(async () => (await mrPhase('mr:pr-e:1')) === 'pull_request');
    // Someone changes the same line on main while the PR waits: GitHub now reports a conflict.
    await repo.commitDirect('shared.txt', 'changed on main\n', 'edit shared.txt on main');
    await eventually(
      async () => (await mrPhase('mr:pr-e:2').catch(() => undefined)) === 'pull_request',
      60_000,
      'round 2 following the PR',
    );
    expect((await t.town.beadState('pr-e')).rounds[0]!.outcome).toMatchObject({ kind: 'conflict' });
    expect(gh.pulls).toHaveLength(1);
    const merged = await gh.merge(pr.number);
    expect(await e.handle.result()).toMatchObject({ status: 'closed', commit: merged });
    expect(await repo.show('shared.txt')).toBe('changed on main\npr-e\n');
  });

  it('reports a pull request closed by a human and never opens a new one for the bead', async () => {
    const { fake: gh } = await prRig('closing', {}, { policy: { maxRounds: 2 } });
    const d = await t.town.sling('closing', { id: 'pr-d', title: 'Rejected by a human' });
    const pr = await pullOf(gh, 'pr-d');
    await eventually(async () => (await mrPhase('mr:pr-d:1')) === 'pull_request');
    gh.close(pr.number);
    const result = await d.handle.result();
    expect(result.status).toBe('failed');
    expect(result.reason).toMatch(/was closed without merging/);
    const state = await t.town.beadState('pr-d');
    // A human's "no" is final for the bead: no rework round, one escalation.
    expect(state.rounds).toHaveLength(1);
    expect(state.runs).toHaveLength(1);
    expect(state.rounds[0]!.outcome).toMatchObject({
      kind: 'pr_closed',
      prUrl: `https://github.example/acme/closing/pull/${pr.number}`,
    });
    expect((await t.town.listEscalations()).filter((e) => e.beadId === 'pr-d').map((e) => e.id)).toEqual(['bead-pr-d']);
    expect(gh.pulls).toHaveLength(1);
    expect(gh.pulls[0]!.state).toBe('closed');
  });
});
