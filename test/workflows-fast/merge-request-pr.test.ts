/**
 * Fast tier, a merge request following its pull request: it looks at the PR on a durable timer (the rig's poll
 * interval) until a human decides, and a PR followed long enough continues as new with what it knows about the PR.
 * The real merge-request workflow on the time-skipping test server; GitHub is a stubbed activity. Hours of polling
 * pass in seconds of wall time.
 */
import { Context } from '@temporalio/activity';
import type { WorkflowHandle } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MergeOutcome } from '../../domain/outcomes';
import type { PullRequestSnapshot } from '../../domain/forge';
import { mergeRequestStateQuery } from '../../domain/messages';
import type { MergeRequestInput } from '../../workflows/merge-request';
import { skipReason, startTimeSkipping, testRig, withWorker } from '../helpers/time-skipping';

const MINUTE = 60_000;
const HEAD = 'abc123'.padEnd(40, '0');
const MERGE_COMMIT = 'd'.repeat(40);
const { EventType } = temporal.api.enums.v1;

const snapshot = (over: Partial<PullRequestSnapshot>): PullRequestSnapshot => ({
  number: 7,
  url: 'https://github.example/o/r/pull/7',
  state: 'open',
  merged: false,
  headSha: HEAD,
  mergeable: true,
  reviews: [],
  threads: [],
  checks: [{ name: 'ci', state: 'pending', detail: '' }],
  ...over,
});

/** A merge request whose refinery already opened PR #7: it starts by following it. */
const following = (id: string, pollInterval: number): MergeRequestInput => ({
  mrId: `mr:${id}:1`,
  bead: { id, title: `fast ${id}` },
  rig: testRig({ merge: 'pr', forge: { pollInterval } }),
  round: 1,
  branch: `gt/${id}`,
  headSha: HEAD,
  targetBranch: 'main',
  following: {
    pr: { number: 7, url: 'https://github.example/o/r/pull/7', created: true },
    looks: 0,
    failedLooks: 0,
    escalated: false,
  },
});

/** The rig has no refinery here: the merge request keeps the configuration it was given. */
const noRefinery = () => Promise.resolve(null);

const eventsOf = async (handle: WorkflowHandle) => (await handle.fetchHistory()).events ?? [];

describe.skipIf(skipReason)('merge request following a pull request (time-skipping)', { timeout: 60_000 }, () => {
  let env: TestWorkflowEnvironment;
  beforeAll(async () => {
    env = await startTimeSkipping();
  });
  afterAll(async () => {
    await env?.teardown();
  });

  it('looks at the PR once per poll interval on a durable timer and ends when a human merged it', async () => {
    let looks = 0;
    const activities = () => ({
      currentRigConfig: noRefinery,
      pullRequestSnapshot: () =>
        Promise.resolve(
          ++looks < 4 ? snapshot({}) : snapshot({ merged: true, state: 'closed', mergeCommitSha: MERGE_COMMIT }),
        ),
    });
    const r = await withWorker(env, activities, async (taskQueue) => {
      const handle = await env.client.workflow.start('mergeRequestWorkflow', {
        workflowId: 'mr:fast-poll:1',
        taskQueue,
        args: [following('fast-poll', 20 * MINUTE)],
      });
      const value = (await handle.result()) as MergeOutcome;
      return { value, state: await handle.query(mergeRequestStateQuery), events: await eventsOf(handle) };
    });

    expect(r.value).toEqual({
      kind: 'merged',
      commit: MERGE_COMMIT,
      targetBranch: 'main',
      prUrl: 'https://github.example/o/r/pull/7',
    });
    expect(r.state).toMatchObject({ phase: 'done', pullRequest: { number: 7, looks: 4 } });
    const timers = r.events.filter((e) => e.eventType === EventType.EVENT_TYPE_TIMER_STARTED);
    expect(timers.map((e) => Number(e.timerStartedEventAttributes!.startToFireTimeout!.seconds))).toEqual([
      1200, 1200, 1200,
    ]);
    expect(r.events.filter((e) => e.eventType === EventType.EVENT_TYPE_TIMER_FIRED)).toHaveLength(3);
    // An hour of workflow time (three 20-minute waits): only a skipped clock lets it pass within the test's timeout
    // (how fast is the bench's business, not a test's: a wall-clock bound here failed on a slow machine).
    const [first, last] = [r.events[0]!, r.events[r.events.length - 1]!];
    const workflowMs = (Number(last.eventTime!.seconds) - Number(first.eventTime!.seconds)) * 1000;
    expect(workflowMs).toBeGreaterThanOrEqual(60 * MINUTE);
  });

  it('continues as new while following a PR for days, carrying its looks, and still ends on the merge', async () => {
    const runs = new Map<string, number>();
    const activities = () => ({
      currentRigConfig: noRefinery,
      pullRequestSnapshot: () => {
        const { runId } = Context.current().info.workflowExecution!;
        runs.set(runId, (runs.get(runId) ?? 0) + 1);
        // Waiting in the first run; merged on the second look of the run it continued as.
        return Promise.resolve(
          runs.size > 1 && runs.get(runId)! >= 2
            ? snapshot({ merged: true, state: 'closed', mergeCommitSha: MERGE_COMMIT })
            : snapshot({}),
        );
      },
    });
    const r = await withWorker(env, activities, async (taskQueue) => {
      const handle = await env.client.workflow.start('mergeRequestWorkflow', {
        workflowId: 'mr:fast-can:1',
        taskQueue,
        args: [following('fast-can', 10 * MINUTE)],
      });
      const firstRun = env.client.workflow.getHandle(handle.workflowId, handle.firstExecutionRunId);
      const value = (await handle.result()) as MergeOutcome;
      return { value, state: await handle.query(mergeRequestStateQuery), firstRunEvents: await eventsOf(firstRun) };
    });

    expect(r.value).toMatchObject({ kind: 'merged', commit: MERGE_COMMIT });
    const [firstLooks, secondLooks] = [...runs.values()];
    expect(runs.size).toBe(2);
    // The test server suggests continue-as-new at 4,096 events: hundreds of looks, days of 10-minute waits.
    expect(firstLooks).toBeGreaterThan(300);
    const continued = r.firstRunEvents[r.firstRunEvents.length - 1]!;
    expect(continued.eventType).toBe(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW);
    expect(r.state.pullRequest).toMatchObject({ number: 7, looks: firstLooks! + secondLooks! });
  });
});
