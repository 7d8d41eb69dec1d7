/**
 * The Temporal baseline of the bench's stack: how long one hand-off takes (a task scheduled → a worker started it),
 * measured on the same dev server by a bare worker running a chain of no-op activities. Every step of a bead
 * (activity, signal, child start, reply) passes through such hand-offs, so this is the share of a bead's latency that
 * Temporal and the machine set, whatever Gas Town does.
 */
import { fileURLToPath } from 'node:url';
import { Worker } from '@temporalio/worker';
import { handoffChain } from './handoff-workflow';
import { parseEvents, type HistoryEvent } from './histories';
import type { BenchStack } from './stack';
import { percentiles, type Percentiles } from './stats';

const TASK_QUEUE = 'bench-handoff';

export interface HandoffFigures {
  steps: number;
  /** ActivityTaskScheduled → ActivityTaskStarted. */
  activityTaskMs: Percentiles;
  /** WorkflowTaskScheduled → WorkflowTaskStarted. */
  workflowTaskMs: Percentiles;
  /** The whole chain / steps: one activity and one workflow task per step. */
  perStepMs: number;
}

export async function measureHandoffs(stack: BenchStack, steps: number, repeats: number): Promise<HandoffFigures[]> {
  const worker = await Worker.create({
    connection: stack.server.env.nativeConnection,
    namespace: stack.server.namespace,
    taskQueue: TASK_QUEUE,
    workflowsPath: fileURLToPath(new URL('./handoff-workflow.ts', import.meta.url)),
    activities: { noop: () => Promise.resolve() },
  });
  const figures: HandoffFigures[] = [];
  await worker.runUntil(async () => {
    for (let r = 1; r <= repeats; r++) {
      const handle = await stack.client.workflow.start(handoffChain, { taskQueue: TASK_QUEUE, workflowId: `bench-handoff-${Date.now()}-${r}`, args: [steps] });
      await handle.result();
      const events = parseEvents((await handle.fetchHistory()).events ?? []);
      const timeOf = new Map(events.map((e) => [e.id, e.time]));
      const waits = (pick: (raw: HistoryEvent['raw']) => { scheduledEventId?: unknown } | null | undefined) =>
        events.flatMap((e) => {
          const started = pick(e.raw);
          return started ? [e.time - (timeOf.get(Number(started.scheduledEventId)) ?? NaN)] : [];
        });
      figures.push({
        steps,
        activityTaskMs: percentiles(waits((e) => e.activityTaskStartedEventAttributes)),
        workflowTaskMs: percentiles(waits((e) => e.workflowTaskStartedEventAttributes)),
        perStepMs: ((events.at(-1)?.time ?? NaN) - (events[0]?.time ?? NaN)) / steps,
      });
    }
  });
  return figures;
}
