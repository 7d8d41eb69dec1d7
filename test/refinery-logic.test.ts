/**
 * The merge queue's pure logic: queue order (priority, age, convoy bonus, capped retry penalty), batch bisection,
 * the adaptive batch limit, and the rig's batch default.
 */
import { describe, expect, it } from 'vitest';
import { assessPullRequest, githubRepository, type PullRequestSnapshot } from '../domain/forge';
import {
  afterProbe,
  type Bisection,
  MergeTicket,
  nextBatchLimit,
  nextBisectionStep,
  orderQueue,
  QUEUE_WEIGHTS,
  startBisection,
  ticketScore,
  withoutItem,
} from '../domain/refinery';
import { DEFAULT_BATCH_SIZE, RigConfig } from '../domain/rig';

const HOUR = 3_600_000;
const NOW = 100 * HOUR;
const ticket = (mrId: string, over: Partial<MergeTicket> = {}): MergeTicket =>
  MergeTicket.parse({
    mrId,
    beadId: mrId.replace(/[^a-z0-9-]/g, '-'),
    round: 1,
    title: mrId,
    branch: `gt/${mrId}`,
    headSha: 'a'.repeat(40),
    targetBranch: 'main',
    enqueuedAt: NOW,
    ...over,
  });

describe('queue order', () => {
  it('takes higher priority first, then the older MR', () => {
    const order = orderQueue(
      [
        ticket('p2-new', { enqueuedAt: NOW - 1000 }),
        ticket('p1', { priority: 1 }),
        ticket('p2-old', { enqueuedAt: NOW - 5000 }),
      ],
      NOW,
    );
    expect(order.map((t) => t.mrId)).toEqual(['p1', 'p2-old', 'p2-new']);
  });

  it('lets an old convoy outrank newer, more urgent work so it cannot starve', () => {
    const urgent = ticket('urgent', { priority: 0 });
    const convoyOld = ticket('convoy-old', { priority: 2, convoyId: 'login', enqueuedAt: NOW });
    // Two priority steps are 200 points; a convoy 21 hours old earns 210.
    expect(orderQueue([urgent, convoyOld], NOW, { login: NOW - 21 * HOUR }).map((t) => t.mrId)).toEqual([
      'convoy-old',
      'urgent',
    ]);
    expect(orderQueue([urgent, convoyOld], NOW, { login: NOW - 19 * HOUR }).map((t) => t.mrId)).toEqual([
      'urgent',
      'convoy-old',
    ]);
    // The ticket's own convoy start wins over the refinery's first sighting.
    expect(
      orderQueue([urgent, { ...convoyOld, convoyStartedAt: NOW - 30 * HOUR }], NOW, { login: NOW }).map((t) => t.mrId),
    ).toEqual(['convoy-old', 'urgent']);
  });

  it('penalises repeated retries, but never by more than the cap', () => {
    const fresh = ticket('fresh', { priority: 4 });
    const retried = ticket('retried', { priority: 2, retries: 1 });
    const thrashing = ticket('thrashing', { priority: 0, retries: 50 });
    expect(ticketScore(retried, NOW)).toBe(
      QUEUE_WEIGHTS.base + 2 * QUEUE_WEIGHTS.priority - QUEUE_WEIGHTS.retryPenalty,
    );
    expect(ticketScore(thrashing, NOW)).toBe(
      QUEUE_WEIGHTS.base + 4 * QUEUE_WEIGHTS.priority - QUEUE_WEIGHTS.maxRetryPenalty,
    );
    // Capped: fifty retries of a P0 cost no more than six, so it still outranks fresh P4 work.
    expect(orderQueue([fresh, retried, thrashing], NOW).map((t) => t.mrId)).toEqual(['retried', 'thrashing', 'fresh']);
  });

  it('is a total order: equal scores fall back to age, then MR id', () => {
    const a = ticket('mr:b:1');
    const b = ticket('mr:a:1');
    expect(orderQueue([a, b], NOW).map((t) => t.mrId)).toEqual(['mr:a:1', 'mr:b:1']);
  });
});

/** Runs a bisection against an oracle: a candidate passes iff it holds no bad item. Returns what landed and the gate runs. */
function simulate(items: string[], bad: Set<string>) {
  let b: Bisection<string> = startBisection(items);
  const landed: string[] = [];
  const culprits: string[] = [];
  let gateRuns = 0;
  for (;;) {
    const step = nextBisectionStep(b);
    if (step.kind === 'done') break;
    if (step.kind === 'culprit') {
      culprits.push(step.item);
      b = withoutItem(b, step.item);
      continue;
    }
    gateRuns++;
    const passed = !step.items.some((i) => bad.has(i));
    if (passed) landed.push(...step.items);
    b = afterProbe(b, step.items.length, passed);
  }
  return { landed, culprits, gateRuns };
}

describe('batch bisection', () => {
  const eight = ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7', 'm8'];

  it('lands a good batch with one gate run', () => {
    expect(simulate(eight, new Set())).toEqual({ landed: eight, culprits: [], gateRuns: 1 });
  });

  it.each(eight)(
    'isolates a single culprit (%s) of eight in at most 1 + log2(8) + 1 gate runs, landing the other seven in order',
    (culprit) => {
      const r = simulate(eight, new Set([culprit]));
      expect(r.culprits).toEqual([culprit]);
      expect(r.landed).toEqual(eight.filter((m) => m !== culprit));
      expect(r.gateRuns).toBeLessThanOrEqual(5);
      expect(r.gateRuns).toBeLessThan(eight.length);
    },
  );

  it('finds several culprits, each in O(log N) more runs', () => {
    const items = Array.from({ length: 16 }, (_, i) => `m${i + 1}`);
    const r = simulate(items, new Set(['m3', 'm11']));
    expect(r.culprits).toEqual(['m3', 'm11']);
    expect(r.landed).toEqual(items.filter((m) => m !== 'm3' && m !== 'm11'));
    expect(r.gateRuns).toBeLessThanOrEqual(2 * (1 + Math.ceil(Math.log2(16))) + 1);
  });

  it('turns a single failing MR into its culprit after one run', () => {
    expect(simulate(['only'], new Set(['only']))).toEqual({ landed: [], culprits: ['only'], gateRuns: 1 });
  });

  it('probes the rest whole again after an MR leaves the batch', () => {
    const b = afterProbe(startBisection(['a', 'b', 'c', 'd']), 4, false);
    expect(nextBisectionStep(b)).toEqual({ kind: 'probe', items: ['a', 'b'] });
    expect(nextBisectionStep(withoutItem(b, 'b'))).toEqual({ kind: 'probe', items: ['a', 'c', 'd'] });
  });
});

describe('the batch limit', () => {
  it('halves after a failed batch down to one at a time, and doubles after a landed one up to the cap', () => {
    const after = (verdicts: ('passed' | 'failed' | 'other')[], from = 8) => {
      const seen: number[] = [];
      let limit = from;
      for (const v of verdicts) seen.push((limit = nextBatchLimit(limit, 8, v)));
      return seen;
    };
    expect(after(['failed', 'failed', 'failed', 'failed'])).toEqual([4, 2, 1, 1]);
    expect(after(['passed', 'passed', 'passed', 'passed'], 1)).toEqual([2, 4, 8, 8]);
    expect(after(['failed', 'other', 'passed'])).toEqual([4, 4, 8]);
    expect(nextBatchLimit(3, 8, 'failed')).toBe(2);
  });

  it('stays within 1 and the cap whatever it is given (a lowered cap, a carried value out of range)', () => {
    expect(nextBatchLimit(8, 4, 'other')).toBe(4);
    expect(nextBatchLimit(0, 4, 'other')).toBe(1);
    expect(nextBatchLimit(-3, 4, 'passed')).toBe(1);
    expect(nextBatchLimit(2.5, 4, 'other')).toBe(2);
    expect(nextBatchLimit(1, 1, 'passed')).toBe(1);
  });

  it('is the default batch size on a rig that does not speculate, and one at a time on one that does', () => {
    const rig = { name: 'x', repo: '/r', agent: 'a' };
    expect(RigConfig.parse(rig).batchSize).toBe(DEFAULT_BATCH_SIZE);
    expect(RigConfig.parse({ ...rig, speculation: 4 })).toMatchObject({ batchSize: 1, speculation: 4 });
    expect(RigConfig.parse({ ...rig, batchSize: 1 }).batchSize).toBe(1);
    expect(RigConfig.safeParse({ ...rig, speculation: 4, batchSize: 2 }).success).toBe(false);
    // A stored rig keeps the size it was parsed with: parsing it again changes nothing.
    const stored = RigConfig.parse({ ...rig, batchSize: 3 });
    expect(RigConfig.parse(stored)).toEqual(stored);
  });
});

describe('pull request assessment', () => {
  const head = 'b'.repeat(40);
  const old = 'c'.repeat(40);
  const pr = (over: Partial<PullRequestSnapshot> = {}): PullRequestSnapshot => ({
    number: 7,
    url: 'https://github.example/o/r/pull/7',
    state: 'open',
    merged: false,
    headSha: head,
    mergeable: true,
    reviews: [],
    threads: [],
    checks: [],
    ...over,
  });

  it('reads merged and closed before anything else', () => {
    expect(assessPullRequest(pr({ merged: true, state: 'closed', mergeCommitSha: 'd'.repeat(40) }), head)).toEqual({
      kind: 'merged',
      commit: 'd'.repeat(40),
    });
    expect(assessPullRequest(pr({ state: 'closed' }), head)).toEqual({ kind: 'closed' });
  });

  it('sends conflicts, failing checks and requested changes back as rework', () => {
    expect(assessPullRequest(pr({ mergeable: false }), head)).toMatchObject({
      kind: 'rework',
      outcome: { kind: 'conflict' },
    });
    expect(
      assessPullRequest(pr({ checks: [{ name: 'ci/test', state: 'failure', detail: '3 tests failed' }] }), head),
    ).toMatchObject({
      kind: 'rework',
      outcome: {
        kind: 'gates_failed',
        gate: 'GitHub checks: ci/test',
        feedback: expect.stringContaining('3 tests failed') as string,
      },
    });
    expect(
      assessPullRequest(
        pr({ reviews: [{ author: 'alice', state: 'CHANGES_REQUESTED', body: 'rename foo', commitId: head }] }),
        head,
      ),
    ).toMatchObject({
      kind: 'rework',
      outcome: { kind: 'changes_requested', feedback: expect.stringContaining('alice: rename foo') as string },
    });
    const thread = {
      resolved: false,
      outdated: false,
      comments: [{ author: 'bob', body: 'off by one', path: 'src/a.ts', commitId: head }],
    };
    expect(assessPullRequest(pr({ threads: [thread] }), head)).toMatchObject({
      kind: 'rework',
      outcome: { feedback: expect.stringContaining('src/a.ts: bob: off by one') as string },
    });
  });

  it('never bounces a round again for feedback given on an earlier head', () => {
    const answered = {
      reviews: [{ author: 'alice', state: 'CHANGES_REQUESTED', body: 'rename foo', commitId: old }],
      threads: [{ resolved: false, outdated: false, comments: [{ author: 'bob', body: 'off by one', commitId: old }] }],
    };
    expect(assessPullRequest(pr(answered), head)).toEqual({
      kind: 'waiting',
      reason: 'waiting for an approving review',
    });
  });

  it('is ready only when green, approved, mergeable and without open threads', () => {
    const approved = { reviews: [{ author: 'alice', state: 'APPROVED', body: '', commitId: head }] };
    expect(assessPullRequest(pr(approved), head)).toEqual({ kind: 'ready' });
    expect(
      assessPullRequest(pr({ ...approved, checks: [{ name: 'ci', state: 'pending', detail: '' }] }), head).kind,
    ).toBe('waiting');
    expect(assessPullRequest(pr({ ...approved, mergeable: null }), head).kind).toBe('waiting');
    expect(
      assessPullRequest(
        pr({
          ...approved,
          threads: [{ resolved: false, outdated: false, comments: [{ author: 'x', body: 'hm', commitId: old }] }],
        }),
        head,
      ).kind,
    ).toBe('waiting');
    expect(
      assessPullRequest(
        pr({
          reviews: [...approved.reviews, { author: 'carol', state: 'CHANGES_REQUESTED', body: 'no', commitId: old }],
        }),
        head,
      ).kind,
    ).toBe('waiting');
  });

  it('finds the GitHub repository of a rig from its remote URL unless configured', () => {
    expect(githubRepository('https://github.com/acme/webapp.git')).toBe('acme/webapp');
    expect(githubRepository('git@github.com:acme/webapp.git')).toBe('acme/webapp');
    expect(githubRepository('/srv/git/webapp.git')).toBeUndefined();
    expect(githubRepository('/srv/git/webapp.git', { repository: 'acme/other' })).toBe('acme/other');
  });
});
