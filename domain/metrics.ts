/**
 * The town's own counters, exported next to the SDK's runtime metrics on the worker's Prometheus endpoint
 * (`GT_METRICS_ADDRESS`, see worker/logging.ts installWorkerRuntime). In domain/ so workflows, activities and
 * the worker share one definition without workflows importing the worker.
 *
 * Workflow-safe on purpose (type imports only): workflow code counts with the meter from '@temporalio/workflow',
 * which skips replays so a counter never double-counts; activities use the meter from '@temporalio/activity'.
 *   import { metricMeter } from '@temporalio/workflow';
 *   countTownEvent(metricMeter, 'redispatches', { rig: rig.name });
 */
import type { MetricMeter, MetricTags } from '@temporalio/common';

export const TOWN_COUNTERS = {
  runsStarted: { name: 'gt_runs_started', description: 'agent runs dispatched (every attempt of every round)' },
  redispatches: {
    name: 'gt_redispatches',
    description: 'runs dispatched again after a failed attempt (exit without gt done, stall, lost host)',
  },
  merges: { name: 'gt_merges', description: 'merge requests merged into their target branch' },
  rework: {
    name: 'gt_rework',
    description: 'merge requests sent back to a polecat (conflict, failed gates, requested changes)',
  },
  escalations: { name: 'gt_escalations', description: 'escalations raised (an agent asked for help or a bead failed)' },
} as const;

export type TownCounter = keyof typeof TOWN_COUNTERS;

/** Tags our counters carry: always the rig; a reason (rework kind, escalation severity, run outcome) where it helps. */
export interface TownEventTags extends MetricTags {
  rig: string;
}

export function countTownEvent(meter: MetricMeter, counter: TownCounter, tags: TownEventTags, amount = 1): void {
  const { name, description } = TOWN_COUNTERS[counter];
  meter.createCounter(name, '1', description).add(amount, tags);
}
