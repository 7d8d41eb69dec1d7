/** The per-rig merge queue's vocabulary. */
import { z } from 'zod';
import { BeadId, ConvoyId } from './ids';

export const MergeTicket = z.object({
  mrId: z.string().min(1).max(200),
  beadId: BeadId,
  round: z.number().int().min(1),
  title: z.string().max(500),
  branch: z.string().min(1),
  headSha: z.string().regex(/^[0-9a-f]{40}$/, 'headSha must be a full 40-hex commit id'),
  targetBranch: z.string().min(1),
  priority: z.number().int().min(0).max(4).default(2),
  convoyId: ConvoyId.optional(),
  /** Workflow time (ms) the ticket was enqueued: the queue's age component. */
  enqueuedAt: z.number().int().nonnegative(),
});
export type MergeTicket = z.infer<typeof MergeTicket>;

export interface RefineryState {
  rig: string;
  paused: boolean;
  merging?: MergeTicket;
  queue: MergeTicket[];
  merged: number;
  rejected: number;
}
