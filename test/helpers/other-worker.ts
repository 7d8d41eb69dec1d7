/**
 * Another worker of the town, as far as a bead's host can tell: a gateway whose accepted `gt done`s that host never
 * hears of, and what a supervision attempt on that worker does with one (its import, then the round's ticket handed
 * to the refinery) when the server had given that attempt up, so that its answer never reaches the bead: the chaos
 * soak's race across two processes (docs/performance.md, the twenty-fifth and twenty-sixth passes). Real gateway,
 * git and refinery; used by test/publish-at-exit.test.ts and scripts/record-histories.ts.
 */
import { join } from 'node:path';
import type { Client } from '@temporalio/client';
import { importRunBranch, syncMirror } from '../../activities/git';
import { mergeRequestQueuer } from '../../activities/town';
import { beadBranch, mergeRequestWorkflowId } from '../../domain/ids';
import type { RigConfig } from '../../domain/rig';
import { startGateway } from '../../gateway/server';
import { DoneRuns } from '../../host/done-runs';
import { gatewaySecret, paths } from '../../host/home';

export async function startOtherWorker(client: Client, gtHome: string) {
  const seen = new DoneRuns();
  const gateway = await startGateway({ client, secret: gatewaySecret(gtHome), socketHome: false, doneRuns: seen });
  return {
    url: gateway.url,
    /** What this worker's gateway saw accepted (and takes it, as its supervision would). */
    seen,
    close: () => gateway.close(),
    /**
     * What its supervision attempt does as round 1's agent of bead `beadId` exits (its worktree as the bead's host
     * left it): imports the branch and hands the round's ticket to the refinery, as the bead's host would. Resolves
     * with the head handed over and the ticket's merge request.
     */
    async handOverUnheard(taskQueue: string, rig: RigConfig, beadId: string, title: string) {
      const trash = paths.trash(rig.name, gtHome);
      const { headSha } = await importRunBranch({
        mirror: paths.mirror(rig.name, gtHome),
        repo: rig.repo,
        workTree: paths.worktree(rig.name, beadId, gtHome),
        branch: beadBranch(beadId),
        targetBranch: rig.branch,
        quarantine: join(trash, '..', `other-worker-${beadId}`),
        home: gtHome,
        trash,
        syncMirror: () => syncMirror(rig.name, rig.repo, gtHome),
      });
      const mrId = mergeRequestWorkflowId(beadId, 1);
      await mergeRequestQueuer(client, taskQueue)(rig)({
        ...{ mrId, beadId, round: 1, title, branch: beadBranch(beadId), headSha, targetBranch: rig.branch },
        enqueuedAt: Date.now(),
      });
      return { headSha, mrId };
    },
  };
}
