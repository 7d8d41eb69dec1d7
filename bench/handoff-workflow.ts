/** The bench's Temporal baseline: chains of no-op steps, nothing of Gas Town in them (bench/handoff.ts). */
import { proxyActivities, sleep, upsertSearchAttributes } from '@temporalio/workflow';

const { noop } = proxyActivities<{ noop(): Promise<void> }>({ startToCloseTimeout: '1m' });

/** Each step: an activity task, then a workflow task (the transfer queue twice). */
export async function handoffChain(steps: number): Promise<void> {
  for (let i = 0; i < steps; i++) await noop();
}

/** Each step: a 1 ms durable timer (the timer queue), then a workflow task (the transfer queue). */
export async function timerChain(steps: number): Promise<void> {
  for (let i = 0; i < steps; i++) await sleep(1);
}

/** Each step: an activity and an upsert of GtRound (a visibility task), as a bead's steps write its status. */
export async function upsertChain(steps: number): Promise<void> {
  for (let i = 1; i <= steps; i++) {
    await noop();
    upsertSearchAttributes({ GtRound: [i] });
  }
}
