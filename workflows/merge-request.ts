/**
 * mr:<beadId>:<round> — one finished branch: (review) → its turn in the refinery → the outcome back to the bead.
 * The refinery answers by signal, matched on MR id *and* head sha, so a late answer about another head
 * (an earlier enqueue, a duplicate) can never be taken for this one.
 */
import { condition, proxyActivities, setCurrentDetails, setHandler } from '@temporalio/workflow';
import { z } from 'zod';
import type { TownQueueActivities } from '../activities';
import { BeadSpec, type MergeOutcome } from '../domain/bead';
import { ConvoyId } from '../domain/ids';
import { mergeResultSignal, type MergeResult } from '../domain/messages';
import { RigConfig } from '../domain/rig';
import { parseOrReject } from '../domain/validation';

const town = proxyActivities<TownQueueActivities>({
  startToCloseTimeout: '1m',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '1m', maximumAttempts: 50 },
});

export const MergeRequestInput = z.object({
  mrId: z.string(),
  bead: BeadSpec,
  rig: RigConfig,
  round: z.number().int().min(1),
  branch: z.string(),
  headSha: z.string().regex(/^[0-9a-f]{40}$/),
  targetBranch: z.string(),
  convoyId: ConvoyId.optional(),
});
export type MergeRequestInput = z.input<typeof MergeRequestInput>;

export async function mergeRequestWorkflow(rawInput: MergeRequestInput): Promise<MergeOutcome> {
  const input = parseOrReject(MergeRequestInput, rawInput, 'merge request input');
  let result: MergeResult | undefined;
  setHandler(mergeResultSignal, (r) => {
    if (r.mrId === input.mrId && r.headSha === input.headSha) result ??= r;
  });

  setCurrentDetails(`waiting for the refinery of **${input.rig.name}** to merge ${input.branch} @ ${input.headSha.slice(0, 10)}`);
  await town.enqueueMergeRequest({
    rig: input.rig,
    ticket: {
      mrId: input.mrId,
      beadId: input.bead.id,
      round: input.round,
      title: input.bead.title,
      branch: input.branch,
      headSha: input.headSha,
      targetBranch: input.targetBranch,
      priority: input.bead.priority,
      convoyId: input.convoyId,
      enqueuedAt: Date.now(),
    },
  });
  await condition(() => result !== undefined);
  setCurrentDetails(`outcome: **${result!.outcome.kind}**`);
  return result!.outcome;
}
