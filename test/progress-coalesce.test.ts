/**
 * Issue 14 item 6: a chatty agent's progress is coalesced per run. 5,000 reports through the real gateway (with the
 * run's own token) record a handful of progress updates in the bead's history, spaced by at least the workflow's
 * minimum gap, and the newest report is the one that stays visible. The bound is read from the history's own event
 * times, not from how long the test took.
 */
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { progressUpdate } from '../domain/messages';
import { PROGRESS_MIN_GAP_MS } from '../domain/progress';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, startTestTown, type TestTown } from './helpers/town';

const { EventType } = temporal.api.enums.v1;
let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

describe('progress reports', () => {
  it('records a bounded number of 5,000 progress calls, spaced by the minimum gap, and keeps the newest visible', async () => {
    const repo = await createRepo();
    const dir = mkdtempSync(join(tmpdir(), 'gt-progress-'));
    await t.addRig({
      name: 'chatty',
      repo: repo.origin,
      agent: agentScript('progress-chatty'),
      env: { TEST_DIR: dir },
    });
    const { handle } = await t.town.sling('chatty', { id: 'b-chatty', title: 'A chatty agent' });
    const where = await eventually(
      () => existsSync(join(dir, 'gateway')) && readFileSync(join(dir, 'gateway'), 'utf8').trim(),
      60_000,
      'the agent to start',
    );
    const [url, tokenFile] = where.split(' ') as [string, string];
    const token = readFileSync(tokenFile, 'utf8').trim();
    const report = async (message: string) => {
      const res = await fetch(`${url}/v1/progress`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ message }),
      });
      expect(res.status, await res.clone().text()).toBe(200);
      return ((await res.json()) as { message: string }).message;
    };

    const answers: string[] = [];
    const CALLS = 5000;
    for (let i = 0; i < CALLS - 1; i += 50)
      answers.push(
        ...(await Promise.all(Array.from({ length: Math.min(50, CALLS - 1 - i) }, (_, k) => report(`step ${i + k}`)))),
      );
    answers.push(await report('the newest report'));
    expect(answers).toHaveLength(CALLS);
    expect(answers.filter((a) => a.startsWith('progress recorded'))).toHaveLength(1);
    expect(answers.filter((a) => a.startsWith('progress noted'))).toHaveLength(CALLS - 1);

    await eventually(
      async () => (await t.town.beadState('b-chatty')).runs[0]?.lastProgress === 'the newest report',
      90_000,
      'the newest report to be recorded',
    );

    const events = (await handle.fetchHistory()).events ?? [];
    const progressAt = events
      .filter(
        (e) =>
          e.eventType === EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED &&
          e.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest?.input?.name === 'gt_progress',
      )
      .map((e) => Number(e.eventTime!.seconds) * 1000 + Math.floor((e.eventTime!.nanos ?? 0) / 1e6));
    // The first report at once, then at most one per interval (two, when the 5,000 calls took less than one).
    expect(progressAt.length).toBeGreaterThanOrEqual(2);
    expect(progressAt.length).toBeLessThanOrEqual(10);
    for (let i = 1; i < progressAt.length; i++)
      expect(progressAt[i]! - progressAt[i - 1]!).toBeGreaterThanOrEqual(PROGRESS_MIN_GAP_MS - 1000);
    // The rest of the history is the run's own (~45 events: dispatch, prepare, start, supervise); each recorded
    // report adds its update's two events and at most one workflow task (three).
    expect(events.length).toBeLessThan(60 + 5 * progressAt.length);

    // The workflow holds the bound itself: a report straight after the last one (not through the gateway) is
    // refused by the validator and leaves no trace in the history.
    const refused = (await handle
      .executeUpdate(progressUpdate, { args: [{ runId: 'b-chatty/r1/a1', message: 'around the gateway' }] })
      .catch((err: unknown) => err)) as WorkflowUpdateFailedError;
    expect(refused).toBeInstanceOf(WorkflowUpdateFailedError);
    expect(refused.cause?.message).toMatch(/at most one report per 25 s is recorded/);
    // Nothing of it in the history: at most a workflow task's three events (on a loaded machine the server may keep
    // the task that ran the validator, when another event came meanwhile), never the update.
    const after = ((await handle.fetchHistory()).events ?? []).slice(events.length);
    const accepted = after.flatMap((e) => e.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest ?? []);
    expect(accepted.map((r) => Buffer.from(r.input?.args?.payloads?.[0]?.data ?? []).toString())).not.toContainEqual(
      expect.stringContaining('around the gateway'),
    );
    expect(after.length).toBeLessThanOrEqual(3);
    expect((await t.town.beadState('b-chatty')).runs[0]?.lastProgress).toBe('the newest report');

    writeFileSync(join(dir, 'release'), '');
    expect((await handle.result()).status).toBe('closed');
  });
});
