/**
 * refinery:<rig> — the rig's merge queue and the only writer of its target branch. One merge section at a
 * time (failure class 9); the merge itself follows the bors rule (see activities/merge.ts). The workflow also
 * holds the rig's configuration, so the rig is visible and editable wherever Temporal is.
 */
import {
  allHandlersFinished,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  log,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { TownQueueActivities } from '../activities';
import type { MergeOutcome } from '../domain/bead';
import { enqueueSignal, mergeResultSignal, refineryStateQuery, rigConfigQuery, updateRigUpdate } from '../domain/messages';
import { MergeTicket, type RefineryState } from '../domain/refinery';
import { RigConfig, type RigConfigInput } from '../domain/rig';
import { SA } from '../domain/search-attributes';
import { describeZodError, parseOrReject } from '../domain/validation';

const merger = proxyActivities<TownQueueActivities>({
  startToCloseTimeout: '2h',
  heartbeatTimeout: '2m',
  retry: { initialInterval: '5s', backoffCoefficient: 2, maximumInterval: '5m', maximumAttempts: 10, nonRetryableErrorTypes: ['InvalidInput'] },
});

export interface RefineryInput {
  rig: RigConfigInput;
  queue?: MergeTicket[];
  seen?: string[];
  stats?: { merged: number; rejected: number };
}

const SEEN_KEEP = 5000;

/** Queue order: priority first (0 = most urgent), then age. */
export function nextTicket(queue: MergeTicket[]): number {
  let best = 0;
  queue.forEach((t, i) => {
    const b = queue[best]!;
    if (t.priority < b.priority || (t.priority === b.priority && t.enqueuedAt < b.enqueuedAt)) best = i;
  });
  return best;
}

export async function refineryWorkflow(input: RefineryInput): Promise<void> {
  let rig = parseOrReject(RigConfig, input.rig, 'rig config');
  const queue: MergeTicket[] = [...(input.queue ?? [])];
  const seen = new Set(input.seen ?? []);
  const stats = { merged: 0, rejected: 0, ...input.stats };
  let merging: MergeTicket | undefined;

  setHandler(enqueueSignal, (raw) => {
    const parsed = MergeTicket.safeParse(raw);
    if (!parsed.success) {
      log.warn('dropping malformed merge ticket', { error: describeZodError(parsed.error) });
      return;
    }
    const key = `${parsed.data.mrId}@${parsed.data.headSha}`;
    if (seen.has(key)) return;
    seen.add(key);
    queue.push(parsed.data);
  });
  setHandler(refineryStateQuery, (): RefineryState => ({ rig: rig.name, paused: false, merging, queue, ...stats }));
  setHandler(rigConfigQuery, () => rig);
  setHandler(
    updateRigUpdate,
    (patch) => {
      rig = RigConfig.parse({ ...rig, ...patch, name: rig.name });
      return rig;
    },
    { validator: (patch) => void parseOrReject(RigConfig, { ...rig, ...patch, name: rig.name }, 'rig update') },
  );

  const describe = () =>
    setCurrentDetails(
      merging
        ? `merging **${merging.mrId}** (${merging.branch}) into ${merging.targetBranch}; ${queue.length} waiting`
        : `idle; ${queue.length} waiting; ${stats.merged} merged, ${stats.rejected} sent back`,
    );

  for (;;) {
    describe();
    await condition(() => queue.length > 0 || workflowInfo().continueAsNewSuggested);
    if (workflowInfo().continueAsNewSuggested) break;
    merging = queue.splice(nextTicket(queue), 1)[0]!;
    upsertSearchAttributes([{ key: SA.status, value: 'merging' }]);
    describe();
    const outcome: MergeOutcome = await merger.mergeCandidate({ rig, ticket: merging });
    if (outcome.kind === 'merged') stats.merged++;
    else stats.rejected++;
    log.info('merge section finished', { mrId: merging.mrId, beadId: merging.beadId, outcome: outcome.kind });
    try {
      await getExternalWorkflowHandle(merging.mrId).signal(mergeResultSignal, { mrId: merging.mrId, headSha: merging.headSha, outcome });
    } catch (err) {
      log.warn('merge request workflow is gone; outcome not delivered', { mrId: merging.mrId, error: String(err) });
    }
    merging = undefined;
    upsertSearchAttributes([{ key: SA.status, value: 'idle' }]);
  }

  await condition(allHandlersFinished);
  await continueAsNew<typeof refineryWorkflow>({ rig, queue, seen: [...seen].slice(-SEEN_KEEP), stats });
}
