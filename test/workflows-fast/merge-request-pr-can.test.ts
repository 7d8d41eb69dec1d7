/**
 * Fast tier, continue-as-new of a merge request that follows its pull request (issue 12): what it knows about the PR
 * must survive the new run, not only how often it looked (merge-request-pr.test.ts):
 *  - GitHub failing: that a human was told carries over, so the new run does not escalate a second time;
 *  - auto-merge: the delay counts from when the PR first looked ready, in whichever run that was, not again from the
 *    continue-as-new.
 * The real merge-request workflow on the time-skipping test server (which suggests continue-as-new at 4,096 events);
 * GitHub is a stubbed activity. Days of polling pass in seconds.
 */
import { Context } from '@temporalio/activity';
import { ApplicationFailure, defaultPayloadConverter } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MergeOutcome } from '../../domain/outcomes';
import type { PullRequestSnapshot } from '../../domain/forge';
import type { ForgeSettingsInput } from '../../domain/forge';
import type { MergeRequestInput } from '../../workflows/merge-request';
import { skipReason, startTimeSkipping, testRig, withWorker } from '../helpers/time-skipping';

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const HEAD = 'abc123'.padEnd(40, '0');
const MERGE_COMMIT = 'e'.repeat(40);
const PR = { number: 9, url: 'https://github.example/o/r/pull/9', created: true };
/** No running refinery to read the rig from: the merge request keeps the rig it was given. */
const noRigChange = () => Promise.resolve(null);

const snapshot = (over: Partial<PullRequestSnapshot> = {}): PullRequestSnapshot => ({
  number: PR.number,
  url: PR.url,
  state: 'open',
  merged: false,
  headSha: HEAD,
  mergeable: true,
  reviews: [],
  threads: [],
  checks: [{ name: 'ci', state: 'pending', detail: '' }],
  ...over,
});
/** Green checks and an approving review of the head: what auto-merge waits for. */
const ready = () =>
  snapshot({
    checks: [{ name: 'ci', state: 'success', detail: '' }],
    reviews: [{ author: 'human', state: 'APPROVED', body: '', commitId: HEAD }],
  });
const merged = () => snapshot({ merged: true, state: 'closed', mergeCommitSha: MERGE_COMMIT });

/** A merge request whose refinery already opened PR #9: it starts by following it. */
const following = (id: string, forge: ForgeSettingsInput): MergeRequestInput => ({
  mrId: `mr:${id}:1`,
  bead: { id, title: `fast ${id}` },
  rig: testRig({ merge: 'pr', forge }),
  round: 1,
  branch: `gt/${id}`,
  headSha: HEAD,
  targetBranch: 'main',
  following: { pr: PR, looks: 0, failedLooks: 0, escalated: false },
});

const eventMs = (e: HistoryEvent) => Number(e.eventTime!.seconds) * 1000 + Math.floor((e.eventTime!.nanos ?? 0) / 1e6);

/** Every run of a workflow, oldest first, by following its continue-as-new chain: run id, history, input. */
async function runChain(env: TestWorkflowEnvironment, workflowId: string, firstRunId: string) {
  const runs: { runId: string; events: HistoryEvent[]; input: MergeRequestInput }[] = [];
  for (let runId: string | undefined = firstRunId; runId;) {
    const history = await env.client.workflow.getHandle(workflowId, runId).fetchHistory();
    const events: HistoryEvent[] = history.events ?? [];
    const started = events[0]!.workflowExecutionStartedEventAttributes!;
    runs.push({
      runId,
      events,
      input: defaultPayloadConverter.fromPayload(started.input!.payloads![0]!),
    });
    runId = events[events.length - 1]!.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId ?? undefined;
  }
  return runs;
}

const runIdNow = () => Context.current().info.workflowExecution!.runId;

describe.skipIf(skipReason)(
  'a followed pull request across continue-as-new (time-skipping)',
  { timeout: 90_000 },
  () => {
    let env: TestWorkflowEnvironment;
    beforeAll(async () => {
      env = await startTimeSkipping();
    });
    afterAll(async () => {
      await env?.teardown();
    });

    it('carries the escalation it raised into the new run, which does not escalate again', async () => {
      const FAILED = 6; // more than the five failed looks in a row after which a human hears about it
      const looksByRun = new Map<string, number>();
      const escalations: string[] = [];
      const activities = () => ({
        currentRigConfig: noRigChange,
        pullRequestSnapshot: () => {
          const runId = runIdNow();
          const look = (looksByRun.get(runId) ?? 0) + 1;
          looksByRun.set(runId, look);
          // GitHub refuses the first looks of each run; the first run then waits on a pending check until it continues
          // as new, the second one finds the PR merged.
          if (look <= FAILED)
            throw ApplicationFailure.nonRetryable('GitHub refused the request (stub)', 'ForgeRejected');
          return Promise.resolve(looksByRun.size === 1 ? snapshot() : merged());
        },
        raiseEscalation: ({ id }: { id: string }) => {
          escalations.push(id);
          return Promise.resolve({ escalationId: id, created: true });
        },
      });
      const r = await withWorker(env, activities, async (taskQueue) => {
        const handle = await env.client.workflow.start('mergeRequestWorkflow', {
          workflowId: 'mr:can-forge:1',
          taskQueue,
          args: [following('can-forge', { pollInterval: 10 * MINUTE })],
        });
        const outcome = (await handle.result()) as MergeOutcome;
        return { outcome, runs: await runChain(env, handle.workflowId, handle.firstExecutionRunId) };
      });

      expect(r.outcome).toMatchObject({ kind: 'merged', commit: MERGE_COMMIT, prUrl: PR.url });
      expect(r.runs).toHaveLength(2);
      const looksInFirstRun = looksByRun.get(r.runs[0]!.runId)!;
      expect(looksInFirstRun).toBeGreaterThan(300);
      // The new run started knowing its successful looks and that a human was told about GitHub; after as many
      // refusals again it told nobody.
      expect(r.runs[1]!.input.following).toEqual({
        pr: PR,
        looks: looksInFirstRun - FAILED,
        failedLooks: 0,
        escalated: true,
      });
      expect(looksByRun.get(r.runs[1]!.runId)).toBe(FAILED + 1);
      expect(escalations).toEqual(['mr-mr.can-forge.1-forge']);
    });

    it('counts the auto-merge delay from when the PR first looked ready, across continue-as-new', async () => {
      const AUTO_MERGE_DELAY = 4 * 24 * HOUR;
      const POLL = 10 * MINUTE;
      const mergesByRun: string[] = [];
      const activities = () => ({
        currentRigConfig: noRigChange,
        pullRequestSnapshot: () => Promise.resolve(ready()),
        mergePullRequest: () => {
          mergesByRun.push(runIdNow());
          return Promise.resolve({ merged: true, commit: MERGE_COMMIT });
        },
      });
      const r = await withWorker(env, activities, async (taskQueue) => {
        const handle = await env.client.workflow.start('mergeRequestWorkflow', {
          workflowId: 'mr:can-auto:1',
          taskQueue,
          args: [following('can-auto', { pollInterval: POLL, autoMerge: true, autoMergeDelay: AUTO_MERGE_DELAY })],
        });
        const outcome = (await handle.result()) as MergeOutcome;
        return { outcome, runs: await runChain(env, handle.workflowId, handle.firstExecutionRunId) };
      });

      expect(r.outcome).toMatchObject({ kind: 'merged', commit: MERGE_COMMIT, prUrl: PR.url });
      // Four days of ten-minute looks do not fit in one run: the merge came from a later one, exactly once.
      expect(r.runs.length).toBeGreaterThanOrEqual(2);
      const last = r.runs[r.runs.length - 1]!;
      expect(mergesByRun).toEqual([last.runId]);
      // Every continued run carried the moment the PR first looked ready, unchanged.
      const readySince = r.runs[1]!.input.following!.readySince!;
      expect(typeof readySince).toBe('number');
      for (const run of r.runs.slice(1)) expect(run.input.following!.readySince).toBe(readySince);
      // The merge was asked for once the delay had passed since then — not a delay after the continue-as-new.
      const mergeAsked = last.events.find(
        (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'mergePullRequest',
      )!;
      const firstRunStart = eventMs(r.runs[0]!.events[0]!);
      expect(readySince - firstRunStart).toBeLessThan(POLL);
      expect(eventMs(mergeAsked) - readySince).toBeGreaterThanOrEqual(AUTO_MERGE_DELAY);
      expect(eventMs(mergeAsked) - readySince).toBeLessThan(AUTO_MERGE_DELAY + POLL);
    });
  },
);
