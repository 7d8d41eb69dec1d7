/**
 * Reviewer runs, on the task queue of the host that will supervise them: a repository of the run's own, detached at
 * exactly the merge request's head (the reviewer reads what would be merged, and cannot move the bead's branch: only
 * the worker pushes, and it takes nothing from a reviewer's repository), and the reviewer's prompt. Supervision is the polecats' own `superviseAgentRun` with role `reviewer`, addressed to the MR workflow.
 */
import { ApplicationFailure, log } from '@temporalio/activity';
import { z } from 'zod';
import { writePromptFile } from '../agents/prompt';
import { BeadSpec } from '../domain/bead';
import { CommitId, fsSafe, RunId } from '../domain/ids';
import { RigConfig } from '../domain/rig';
import { paths } from '../host/home';
import type { HostDeps } from './agent-runs';
import { createRunRepo, gitStatus, syncMirror } from './git';
import { discardTree } from './trash';
import { parseActivityInput } from '../domain/validation';
import { whileHeartbeating } from './heartbeat';
import { Failure } from '../domain/failures';

export const PrepareReviewInput = z.object({
  rig: RigConfig,
  bead: BeadSpec,
  mrId: z.string().min(1),
  runId: RunId,
  round: z.number().int().min(1),
  attempt: z.number().int().min(1),
  branch: z.string().min(1),
  headSha: CommitId,
  targetBranch: z.string().min(1),
});
export type PrepareReviewInput = z.input<typeof PrepareReviewInput>;

export const FinishReviewInput = z.object({ rig: RigConfig, runId: RunId });
export type FinishReviewInput = z.input<typeof FinishReviewInput>;

export interface PreparedReview {
  host: string;
  worktree: string;
  promptFile: string;
}

/** A '.' never occurs in a bead id, so review worktrees can never collide with a polecat's. */
const reviewWorktree = (rig: string, runId: string, home: string) =>
  paths.worktree(rig, `${fsSafe(runId)}.review`, home);

export function createReviewRunActivities(deps: HostDeps) {
  return {
    prepareReviewRun(raw: PrepareReviewInput): Promise<PreparedReview> {
      return whileHeartbeating('preparing the review', async () => {
        const input = parseActivityInput(PrepareReviewInput, raw);
        const mirror = await syncMirror(input.rig.name, input.rig.repo, deps.gtHome);
        if (!(await gitStatus(mirror, ['cat-file', '-e', `${input.headSha}^{commit}`])).ok) {
          throw ApplicationFailure.nonRetryable(
            `commit ${input.headSha} of ${input.branch} is not in ${input.rig.repo}`,
            Failure.HeadMissing,
          );
        }
        const worktree = reviewWorktree(input.rig.name, input.runId, deps.gtHome);
        // A repository of the reviewer's own, detached at the head: it reads what would be merged and moves nothing.
        await createRunRepo(mirror, worktree, { sha: input.headSha }, paths.trash(input.rig.name, deps.gtHome));
        const promptFile = writePromptFile(paths.agentDir(input.runId, deps.gtHome), {
          bead: input.bead,
          rig: input.rig.name,
          runId: input.runId,
          role: 'reviewer',
          round: input.round,
          attempt: input.attempt,
          branch: input.branch,
          targetBranch: input.targetBranch,
          feedback: [],
        });
        log.info('review run prepared', { runId: input.runId, mrId: input.mrId, worktree, head: input.headSha });
        return { host: deps.hostId, worktree, promptFile };
      });
    },

    /** Removes the review worktree once the verdict is in (the run directory with its log stays). */
    finishReviewRun(raw: FinishReviewInput): Promise<void> {
      const input = parseActivityInput(FinishReviewInput, raw);
      discardTree(reviewWorktree(input.rig.name, input.runId, deps.gtHome), paths.trash(input.rig.name, deps.gtHome));
      return Promise.resolve();
    },
  };
}

export type ReviewRunActivities = ReturnType<typeof createReviewRunActivities>;
