/** The bench's Temporal baseline: no-op activities one after another, nothing of Gas Town in it (bench/handoff.ts). */
import { proxyActivities } from '@temporalio/workflow';

const { noop } = proxyActivities<{ noop(): Promise<void> }>({ startToCloseTimeout: '1m' });

export async function handoffChain(steps: number): Promise<void> {
  for (let i = 0; i < steps; i++) await noop();
}
