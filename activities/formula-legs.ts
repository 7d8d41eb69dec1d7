/**
 * Cleaning up after the legs of a formula's legs step (docs/formulas.md, "legs"). Each leg worked in a worktree of
 * its own on the host that ran it (`<bead>.leg-<k>`) and published a branch of its own to the rig's repository
 * (`gt-leg/<bead>/r<round>/<k>`). The worktrees are removed once the legs step has ended (the synthesis reads the
 * legs' branches from the mirror, never their worktrees); the branches once the bead has merged (a rework or a retry
 * of the synthesis reads them until then).
 * Both are idempotent: a retried activity finds less, or nothing, to remove.
 */
import { existsSync, readdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { log } from '@temporalio/activity';
import { z } from 'zod';
import { BeadId, RigName } from '../domain/ids';
import { RigConfig } from '../domain/rig';
import { parseActivityInput } from '../domain/validation';
import { paths } from '../host/home';
import { git, syncMirror, withLock } from './git';
import { discardTree } from './trash';

export const LegWorktreesInput = z.object({ rig: RigName, beadId: BeadId });
export type LegWorktreesInput = z.input<typeof LegWorktreesInput>;

export const LegBranchesInput = z.object({ rig: RigConfig, beadId: BeadId });
export type LegBranchesInput = z.input<typeof LegBranchesInput>;

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** On the queue of each host that ran a leg: removes the bead's leg worktrees there. */
export function createLegWorktreeActivities(deps: { gtHome: string }) {
  return {
    removeLegWorktrees(raw: LegWorktreesInput): Promise<{ removed: string[] }> {
      const input = parseActivityInput(LegWorktreesInput, raw);
      const dir = dirname(paths.worktree(input.rig, input.beadId, deps.gtHome));
      const leg = new RegExp(`^${escape(input.beadId)}\\.leg-\\d+$`);
      const removed = existsSync(dir) ? readdirSync(dir).filter((e) => leg.test(e)) : [];
      for (const e of removed) discardTree(`${dir}/${e}`, paths.trash(input.rig, deps.gtHome));
      if (removed.length) log.info('leg worktrees removed', { beadId: input.beadId, removed });
      return Promise.resolve({ removed });
    },
  };
}

/** On the town queue: deletes every leg branch of the bead from the rig's repository and the mirror. */
export function createLegBranchActivities(deps: { gtHome: string }) {
  return {
    async deleteLegBranches(raw: LegBranchesInput): Promise<{ deleted: string[] }> {
      const input = parseActivityInput(LegBranchesInput, raw);
      const { rig, beadId } = input;
      const mirror = await syncMirror(rig.name, rig.repo, deps.gtHome);
      // Exactly this bead's legs (`gt-leg/<bead>/r<round>/<k>`), of every round and every earlier workflow run.
      const leg = new RegExp(`^gt-leg/${escape(beadId)}/r\\d+/\\d+$`);
      const deleted = await withLock(mirror, async () => {
        const refs = await git(mirror, ['for-each-ref', '--format=%(refname:lstrip=3)', `refs/remotes/origin/gt-leg/`]);
        const branches = refs.split('\n').filter((b) => leg.test(b));
        if (!branches.length) return [];
        await git(mirror, ['push', '--quiet', 'origin', ...branches.map((b) => `:refs/heads/${b}`)]);
        for (const b of branches) await git(mirror, ['update-ref', '-d', `refs/remotes/origin/${b}`]);
        return branches;
      });
      if (deleted.length) log.info('leg branches deleted', { beadId, deleted });
      return { deleted };
    },
  };
}
