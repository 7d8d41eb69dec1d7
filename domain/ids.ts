/**
 * Identities of everything in a town. Workflow ids are deterministic so a retried start finds the existing
 * workflow instead of starting a second one; run ids make every agent attempt individually addressable.
 */
import { z } from 'zod';

const SLUG = /^[a-z0-9][a-z0-9_-]{0,62}$/;
const slug = (what: string) =>
  z.string().regex(SLUG, `${what} must be 1-63 characters of a-z, 0-9, '-' or '_', starting with a letter or digit`);

export const RigName = slug('rig name');
/** A commit's full object id (SHA-1), as the refinery reports a merge. */
export const CommitId = z.string().regex(/^[0-9a-f]{40}$/, 'a commit id must be 40 lowercase hex digits');
/** At most this many dependencies' merges are handed to a bead's first run (more: the run fetches, as any run does). */
export const MAX_AFTER_COMMITS = 64;
export const BeadId = slug('bead id');
export const ConvoyId = slug('convoy id');

export const beadWorkflowId = (beadId: string) => `bead:${beadId}`;
export const mergeRequestWorkflowId = (beadId: string, round: number) => `mr:${beadId}:${round}`;
export const refineryWorkflowId = (rig: string) => `refinery:${rig}`;
export const convoyWorkflowId = (convoyId: string) => `convoy:${convoyId}`;

/** `<beadId>/r<round>/a<attempt>`: the only identity an agent may speak for. */
export const runIdOf = (beadId: string, round: number, attempt: number) => `${beadId}/r${round}/a${attempt}`;

export const RunId = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9_-]{0,62}\/r[1-9][0-9]*\/(a|review)[1-9][0-9]*$/,
    'run id must look like <beadId>/r<round>/a<attempt> (or /review<n> for a reviewer)',
  );

/** Reviewer runs live on the merge request: `<beadId>/r<round>/review<attempt>`. */
export const reviewRunIdOf = (beadId: string, round: number, attempt: number) => `${beadId}/r${round}/review${attempt}`;

/** The branch a bead's polecats work on, kept across rounds so rework builds on earlier work. */
export const beadBranch = (beadId: string) => `gt/${beadId}`;
/**
 * The branch of leg `leg` of a formula's legs step in round `round` (docs/formulas.md): outside `gt/` (a ref
 * `gt/<bead>` cannot have refs below it), so no bead's branch can be a leg's, and each round's legs have their own.
 */
export const legBranch = (beadId: string, round: number, leg: number) => `gt-leg/${beadId}/r${round}/${leg}`;
export const convoyBranch = (convoyId: string) => `convoy/${convoyId}`;

/** File-system safe form of an id (run ids contain '/'). */
export const fsSafe = (id: string) => id.replace(/[^a-zA-Z0-9_.-]/g, '_');
