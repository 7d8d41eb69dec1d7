/**
 * The gateway's per-run progress coalescing (gateway/progress-coalescer.ts) on a fake clock: the first report goes at
 * once, later ones within the interval are held with only the newest kept and sent when it has passed, runs are
 * independent, a report the workflow refuses as too soon waits for another interval, and close() sends what waits.
 */
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ProgressCoalescer } from '../gateway/progress-coalescer';

const tooSoon = () =>
  new WorkflowUpdateFailedError(
    'Workflow Update failed',
    ApplicationFailure.nonRetryable('too soon', 'ProgressTooSoon'),
  );

describe('ProgressCoalescer', () => {
  beforeEach(() => void vi.useFakeTimers());
  afterEach(() => void vi.useRealTimers());

  it('sends the first report at once and only the newest of the rest when the interval has passed', async () => {
    const sent: string[] = [];
    const c = new ProgressCoalescer(1000);
    const send = (m: string) => () => {
      sent.push(m);
      return Promise.resolve(`recorded ${m}`);
    };
    expect(await c.submit('r1', send('a'))).toBe('recorded a');
    for (const m of ['b', 'c', 'd']) expect(await c.submit('r1', send(m))).toBeUndefined();
    // Another run is not held back by r1.
    expect(await c.submit('r2', send('x'))).toBe('recorded x');
    expect(sent).toEqual(['a', 'x']);
    await vi.advanceTimersByTimeAsync(999);
    expect(sent).toEqual(['a', 'x']);
    await vi.advanceTimersByTimeAsync(1);
    expect(sent).toEqual(['a', 'x', 'd']);
    // The next report within the new interval waits again; after a quiet interval one goes at once.
    expect(await c.submit('r1', send('e'))).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1000);
    expect(sent).toEqual(['a', 'x', 'd', 'e']);
    await vi.advanceTimersByTimeAsync(1000);
    expect(await c.submit('r1', send('f'))).toBe('recorded f');
  });

  it('holds a report the workflow refused as too soon, sends it after another interval, and drops other failures', async () => {
    const attempts: string[] = [];
    const dropped: string[] = [];
    const c = new ProgressCoalescer(1000, (runId) => dropped.push(runId));
    let refuse = 2;
    const refusing = () => {
      attempts.push('a');
      return refuse-- > 0 ? Promise.reject(tooSoon()) : Promise.resolve('ok');
    };
    // Refused at once (another gateway recorded one just now): held, not an error for the agent.
    expect(await c.submit('r1', refusing)).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1000);
    expect(attempts).toHaveLength(2); // refused again: waits one more interval
    await vi.advanceTimersByTimeAsync(1000);
    expect(attempts).toHaveLength(3);
    expect(dropped).toEqual([]);

    await vi.advanceTimersByTimeAsync(1000);
    await c.submit('r2', () => Promise.resolve());
    await c.submit('r2', () => Promise.reject(new Error('the run ended')));
    await vi.advanceTimersByTimeAsync(1000);
    expect(dropped).toEqual(['r2']);
  });

  it('sends what waits when it closes', async () => {
    const sent: string[] = [];
    const c = new ProgressCoalescer(1000);
    await c.submit('r1', () => Promise.resolve(void sent.push('a')));
    await c.submit('r1', () => Promise.resolve(void sent.push('b')));
    await c.close();
    expect(sent).toEqual(['a', 'b']);
  });
});
