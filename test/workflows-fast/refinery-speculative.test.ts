/**
 * Fast tier, the speculative refinery's window logic on the time-skipping test server with stubbed activities: at
 * most `speculation` candidates gate at once, each on the target + the MRs ahead of it; only chains whose own
 * candidate passed land, by compare-and-swap on the exact target, in queue order; a failing MR is sent back and the
 * candidates behind it are built again without it. The stubs keep a fake target and fake commit ids, so every
 * landing is checked against what was gated. (The real git and gate processes: test/refinery-speculative.test.ts.)
 */
import { createHash } from 'node:crypto';
import { Client } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChainLink, GateSpeculativeInput, LandChainInput } from '../../activities/merge';
import { refineryWorkflowId } from '../../domain/ids';
import { enqueueSignal, pauseRefineryUpdate, refineryStateQuery } from '../../domain/messages';
import type { LandResult, MergeTicketInput, SpeculativeGateResult } from '../../domain/refinery';
import { deliveryActivity, skipReason, startTimeSkipping, testRig, withWorker } from '../helpers/time-skipping';

const ticket = (name: string, n: number): MergeTicketInput => ({
  mrId: `mr:${name}:1`,
  beadId: name,
  round: 1,
  title: `bead ${name}`,
  branch: `gt/${name}`,
  headSha: createHash('sha1').update(name).digest('hex'),
  targetBranch: 'main',
  enqueuedAt: n,
});

/** The fake commit of `base` + the chain up to each link: the same chain on the same base is the same commit. */
const chainCommits = (base: string, chain: { ticket: { mrId: string } }[]) => {
  let at = base;
  return chain.map((l) => ({
    mrId: l.ticket.mrId,
    commit: (at = createHash('sha1').update(`${at}+${l.ticket.mrId}`).digest('hex')),
  }));
};
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.skipIf(skipReason)('speculative refinery (time-skipping)', { timeout: 60_000 }, () => {
  let env: TestWorkflowEnvironment;
  beforeAll(async () => {
    env = await startTimeSkipping();
  });
  afterAll(async () => {
    await env?.teardown();
  });

  it('gates up to 3 at once on stacked chains, evicts the bad MR, rebuilds behind it and lands in queue order', async () => {
    const names = ['a', 'b', 'c', 'bad', 'd', 'e', 'f'];
    let target = '0'.repeat(40);
    let active = 0;
    let mostActive = 0;
    const gated: { mrIds: string[]; base: string; passed: boolean; sha: string }[] = [];
    const landings: { mrIds: string[]; sha: string }[] = [];
    const activities = (taskQueue: string) => ({
      ...deliveryActivity(env.client, taskQueue),
      targetTip: () => Promise.resolve({ sha: target }),
      gateSpeculative: async ({ base, chain }: GateSpeculativeInput): Promise<SpeculativeGateResult> => {
        active++;
        mostActive = Math.max(mostActive, active);
        // Hold the gate until the window is full (bounded: the queue's tail has fewer MRs than the window).
        for (let i = 0; i < 100 && active < 3; i++) await sleep(20);
        const mrIds = (chain as ChainLink[]).map((l) => l.ticket.mrId);
        // A candidate behind the bad MR is still gating when the bad one's failure discards it: its cancellation is
        // requested while it runs. (The Java test server fails the workflow task that cancels an activity completed
        // in the meantime, ACTIVITY_UNKNOWN, instead of ignoring it: this keeps that race out of the test.)
        await sleep(mrIds.includes('mr:bad:1') && mrIds.at(-1) !== 'mr:bad:1' ? 1500 : 20);
        active--;
        const commits = chainCommits(base, chain);
        const sha = commits.at(-1)!.commit;
        const passed = !mrIds.includes('mr:bad:1');
        gated.push({ mrIds, base, passed, sha });
        if (passed) return { kind: 'passed', candidateSha: sha, commits, gateRuns: 1 };
        return {
          kind: 'gates_failed',
          gateRuns: 1,
          outcome: { kind: 'gates_failed', gate: 'test', logPath: '/dev/null', feedback: 'the gate failed' },
        };
      },
      landChain: ({ base, chain, candidateSha }: LandChainInput): Promise<LandResult> => {
        // Compare-and-swap on the fake target, and only to the commit the chain makes on it.
        if (base !== target) return Promise.resolve({ kind: 'stale', reason: 'target moved' });
        if (chainCommits(base, chain).at(-1)!.commit !== candidateSha)
          return Promise.resolve({ kind: 'stale', reason: 'not the gated commit' });
        target = candidateSha;
        landings.push({ mrIds: (chain as ChainLink[]).map((l) => l.ticket.mrId), sha: candidateSha });
        return Promise.resolve({ kind: 'merged', commit: candidateSha, alreadyMerged: false });
      },
    });
    const state = await withWorker(env, activities, async (taskQueue) => {
      const client = new Client({ connection: env.connection });
      const rig = testRig({ name: 'fast-spec', speculation: 3, gates: ['test'] });
      const handle = await client.workflow.start('refineryWorkflow', {
        workflowId: refineryWorkflowId(rig.name),
        taskQueue,
        args: [{ rig, paused: true }],
      });
      for (const [i, name] of names.entries()) await handle.signal(enqueueSignal, ticket(name, i) as never);
      await handle.executeUpdate(pauseRefineryUpdate, { args: [{ paused: false }] });
      for (;;) {
        const s = await handle.query(refineryStateQuery);
        if (s.merged + s.rejected === names.length && !s.section) {
          await handle.terminate('test over');
          return s;
        }
        await sleep(50);
      }
    });

    expect(state.recent.map((r) => [r.mrId, r.outcome])).toEqual([
      ['mr:a:1', 'merged'],
      ['mr:b:1', 'merged'],
      ['mr:c:1', 'merged'],
      ['mr:bad:1', 'gates_failed'],
      ['mr:d:1', 'merged'],
      ['mr:e:1', 'merged'],
      ['mr:f:1', 'merged'],
    ]);
    // Queue order, each MR landed once, and every landed commit is one whose own gate run passed.
    expect(landings.flatMap((l) => l.mrIds)).toEqual(['a', 'b', 'c', 'd', 'e', 'f'].map((n) => `mr:${n}:1`));
    const passed = new Set(gated.filter((g) => g.passed).map((g) => g.sha));
    expect(landings.every((l) => passed.has(l.sha))).toBe(true);
    // Candidates behind the bad MR were gated on chains holding it (and failed), then rebuilt without it.
    expect(gated.some((g) => !g.passed && g.mrIds.at(-1) === 'mr:d:1')).toBe(true);
    expect(gated.some((g) => g.passed && g.mrIds.at(-1) === 'mr:d:1' && !g.mrIds.includes('mr:bad:1'))).toBe(true);
    // Stacked: some candidate was gated on the target + MRs still being gated, never more than 3 at once.
    expect(gated.some((g) => g.mrIds.length > 1)).toBe(true);
    expect(mostActive).toBe(3);
    expect(state.gateRuns).toBeGreaterThanOrEqual(gated.length);
  });
});
