/**
 * Activity registry. The town queue runs host-independent activities (merges, gates, Temporal calls);
 * each host's own queue runs the agent-run activities of the agents it owns.
 */
import { createAgentRunActivities, type HostDeps } from './agent-runs';
import { createConvoyActivities } from './convoy';
import { createDispatchActivities } from './dispatch';
import { createFormulaStepActivities } from './formula-steps';
import { forgeActivities } from './forge';
import { createMergeActivities, type MergeDeps } from './merge';
import { createReviewRunActivities } from './review-runs';
import { createTownActivities, type TownDeps } from './town';

export function createTownQueueActivities(deps: TownDeps & MergeDeps) {
  return {
    ...createTownActivities(deps),
    ...createConvoyActivities(deps),
    ...createDispatchActivities(deps),
    ...createMergeActivities(deps),
    ...createFormulaStepActivities(deps),
    ...forgeActivities,
  };
}

export function createHostQueueActivities(deps: HostDeps) {
  return { ...createAgentRunActivities(deps), ...createReviewRunActivities(deps) };
}

export type TownQueueActivities = ReturnType<typeof createTownQueueActivities>;
export type HostQueueActivities = ReturnType<typeof createHostQueueActivities>;
export type { HostDeps, MergeDeps, TownDeps };
