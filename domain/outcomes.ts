/**
 * What a merge request ends with. Its own module because the bead, the refinery, the convoy and the forge all speak
 * of it, and the forge is part of a rig's config, which a bead's input holds: kept in domain/bead.ts it closed a cycle.
 */
import { z } from 'zod';

/** Outcome of a merge request, as the bead sees it. Everything but `merged` is rework with feedback. */
export const MergeOutcome = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('merged'),
    commit: z.string(),
    targetBranch: z.string(),
    prUrl: z.string().optional(),
    /** The refinery reported this merge to the bead's convoy (MergeTicket.convoyBead): the bead need not. */
    convoyTold: z.boolean().optional(),
  }),
  z.object({ kind: z.literal('conflict'), paths: z.array(z.string()), feedback: z.string() }),
  z.object({ kind: z.literal('gates_failed'), gate: z.string(), feedback: z.string(), logPath: z.string().optional() }),
  z.object({ kind: z.literal('changes_requested'), feedback: z.string() }),
  z.object({ kind: z.literal('rejected'), feedback: z.string() }),
  /** PR strategy: a human closed the pull request without merging. Terminal: the bead fails (and escalates), no rework. */
  z.object({ kind: z.literal('pr_closed'), prUrl: z.string(), feedback: z.string() }),
]);
export type MergeOutcome = z.infer<typeof MergeOutcome>;
