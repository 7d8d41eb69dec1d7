/**
 * Activity registry. The town queue runs host-independent activities (merges, gates, Temporal calls);
 * each host's own queue runs the agent-run activities of the agents it owns, and reads their output for `gt logs`.
 */
import { createAgentRunActivities, type HostDeps } from './agent-runs';
import { type ConvoyDeps, createConvoyActivities } from './convoy';
import { createDispatchActivities, type DispatchDeps } from './dispatch';
import { createLegBranchActivities, createLegWorktreeActivities } from './formula-legs';
import { createFormulaStepActivities } from './formula-steps';
import { createLogActivities } from './logs';
import { createForgeActivities } from './forge';
import { createMergeActivities, type MergeDeps } from './merge';
import { createNotifyActivities } from './notify';
import { createReviewRunActivities } from './review-runs';
import { createRigConfigActivities } from './rig-config';
import { convoyReporter, createTownActivities, type TownDeps } from './town';

/** escalationWebhook: the town's escalation webhook URL (configuration, never a payload: activities/notify.ts). */
export function createTownQueueActivities(
  deps: ConvoyDeps & MergeDeps & DispatchDeps & { escalationWebhook?: string },
) {
  return {
    ...createTownActivities(deps),
    ...createNotifyActivities({ escalationWebhook: deps.escalationWebhook, town: deps.taskQueue }),
    ...createConvoyActivities(deps),
    ...createDispatchActivities(deps),
    ...createMergeActivities({ ...deps, reportMerge: convoyReporter(deps.client) }),
    ...createFormulaStepActivities(deps),
    ...createLegBranchActivities(deps),
    ...createRigConfigActivities(deps),
    ...createForgeActivities(deps),
  };
}

export function createHostQueueActivities(deps: HostDeps) {
  return {
    ...createAgentRunActivities(deps),
    ...createReviewRunActivities(deps),
    ...createLogActivities(deps),
    ...createLegWorktreeActivities(deps),
  };
}

export type TownQueueActivities = ReturnType<typeof createTownQueueActivities>;
export type HostQueueActivities = ReturnType<typeof createHostQueueActivities>;
export type { HostDeps, MergeDeps, TownDeps };
