/**
 * Issue 12: the rig's merge strategies and git identity with real beads, polecat processes and git.
 *  - `rebase`: every commit of a polecat is replayed on the target as it is when its turn comes, history stays
 *    linear, the last replayed commit carries the merge trailer and is the bead's merged commit;
 *  - a conflict under `rebase` goes back to the polecat, which resolves it the way its feedback says (merging the
 *    target into its branch), and that resolution lands;
 *  - the rig's git identity (`--git-name/--git-email`) is the author and committer of the agents' commits
 *    (docs/agents.md) and stays their author when the refinery replays them; what the refinery itself makes (merge
 *    commits, replays) it commits as itself. (A squash commit is the refinery's alone: not asserted here.)
 */
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRepo } from './helpers/repo';
import { firstParentHistory, git, pauseRefinery, waitForQueue } from './helpers/refinery';
import { agentScript, startTestTown, type TestTown } from './helpers/town';

const RIG_IDENTITY = { name: 'Rig Writer', email: 'writer@rig.example' };
const REFINERY = 'Gas Town Refinery <refinery@gastown.local>';

/** A polecat that commits its work in two commits (so a replay of each can be seen), then calls gt done. */
function twoCommitAgent(): string {
  const script = join(mkdtempSync(join(tmpdir(), 'gt-agent-')), 'two-commits.sh');
  writeFileSync(
    script,
    `#!/bin/sh
set -eu
mkdir -p work
echo "part 1 of $GT_BEAD_ID" > "work/$GT_BEAD_ID-1.txt"
git add -A && git commit -q -m "part 1 of $GT_BEAD_ID"
echo "part 2 of $GT_BEAD_ID" > "work/$GT_BEAD_ID-2.txt"
git add -A && git commit -q -m "part 2 of $GT_BEAD_ID"
gt done --summary "two commits"
`,
  );
  chmodSync(script, 0o755);
  return script;
}

interface CommitInfo {
  sha: string;
  parents: string[];
  subject: string;
  body: string;
  author: string;
  committer: string;
}

/** Commits of `range` in the bare repository, oldest first. */
async function commits(origin: string, range: string): Promise<CommitInfo[]> {
  const out = await git(origin, [
    'log',
    '--reverse',
    '--format=%H%x1f%P%x1f%s%x1f%b%x1f%an <%ae>%x1f%cn <%ce>%x1e',
    range,
  ]);
  return out
    .split('\x1e')
    .map((r) => r.trim())
    .filter(Boolean)
    .map((r) => {
      const [sha, parents, subject, body, author, committer] = r.split('\x1f');
      return {
        sha: sha!,
        parents: parents!.split(' ').filter(Boolean),
        subject: subject!,
        body: body!,
        author: author!,
        committer: committer!,
      };
    });
}

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

/** Slings `ids` onto a rig whose refinery is held until all their MRs are queued: every branch starts from one base. */
async function slingTogether(rig: string, ids: string[]) {
  await pauseRefinery(t, rig, true);
  const beads = [];
  for (const id of ids) beads.push(await t.town.sling(rig, { id, title: `Work of ${id}` }));
  await waitForQueue(t, rig, ids.length);
  await pauseRefinery(t, rig, false);
  return Promise.all(beads.map((b) => b.handle.result()));
}

describe('the rebase strategy', () => {
  it("replays each polecat's commits on the moved target: linear history, trailer on the last, rig identity as author", async () => {
    const repo = await createRepo();
    const base = await repo.sha();
    await t.addRig({
      name: 'rebased',
      repo: repo.origin,
      agent: twoCommitAgent(),
      mergeStrategy: 'rebase',
      gitIdentity: RIG_IDENTITY,
    });
    const results = await slingTogether('rebased', ['rb-1', 'rb-2']);
    expect(results.map((r) => r.status)).toEqual(['closed', 'closed']);
    const resultOf = { 'rb-1': results[0]!, 'rb-2': results[1]! };

    const landed = await commits(repo.origin, `${base}..main`);
    // Linear: four single-parent commits, each on the one before (the second bead's were rebuilt on the first's).
    expect(landed.map((c) => c.parents)).toEqual([[base], ...landed.slice(0, -1).map((c) => [c.sha])]);
    expect(await firstParentHistory(repo.origin, base)).toHaveLength(4);
    const order = landed[0]!.subject.endsWith('rb-1') ? ['rb-1', 'rb-2'] : ['rb-2', 'rb-1'];
    expect(landed.map((c) => c.subject)).toEqual(order.flatMap((id) => [`part 1 of ${id}`, `part 2 of ${id}`]));

    for (const [i, id] of (order as ('rb-1' | 'rb-2')[]).entries()) {
      const [first, last] = [landed[2 * i]!, landed[2 * i + 1]!];
      const state = await t.town.beadState(id);
      const headSha = state.rounds[0]!.headSha;
      // The last replayed commit is the bead's merged commit and names the MR and the head it replays.
      expect(last.body).toContain(`Gt-Merge-Request: mr:${id}:1@${headSha}`);
      expect(first.body).not.toContain('Gt-Merge-Request');
      expect(resultOf[id].commit).toBe(last.sha);
      expect(state.mergedCommit).toBe(last.sha);
    }
    // The polecat's authorship (the rig's identity) survives the replay; the replays are committed by the refinery.
    for (const c of landed) {
      expect(c.author, c.subject).toBe(`${RIG_IDENTITY.name} <${RIG_IDENTITY.email}>`);
      expect(c.committer, c.subject).toBe(REFINERY);
    }
    expect(await repo.show('work/rb-2-2.txt')).toBe('part 2 of rb-2\n');
  });

  it('a conflict goes back to the polecat; its resolution (merging the target in, as the feedback says) lands linearly', async () => {
    const repo = await createRepo({ 'shared.txt': 'base\n' });
    const base = await repo.sha();
    await t.addRig({
      name: 'rebase-clash',
      repo: repo.origin,
      agent: agentScript('refinery-conflict'),
      mergeStrategy: 'rebase',
    });
    const results = await slingTogether('rebase-clash', ['rc-a', 'rc-b']);
    const states = await Promise.all(['rc-a', 'rc-b'].map((id) => t.town.beadState(id)));
    expect(
      results.map((r) => r.status),
      JSON.stringify(states.map((s) => s.rounds.map((r) => r.outcome))),
    ).toEqual(['closed', 'closed']);

    const [first, second] = states[0]!.rounds.length === 1 ? states : [states[1]!, states[0]!];
    expect(second!.rounds.map((r) => r.outcome?.kind)).toEqual(['conflict', 'merged']);
    expect(second!.rounds[0]!.outcome).toMatchObject({ paths: ['shared.txt'] });
    // Both changes are on the target, in merge order, and the target's history has no merge commit.
    expect(await repo.show('shared.txt')).toBe(`${first!.beadId}\n${second!.beadId}\n`);
    const landed = await commits(repo.origin, `${base}..main`);
    expect(landed.every((c) => c.parents.length === 1)).toBe(true);
    expect(landed[landed.length - 1]!.sha).toBe(second!.mergedCommit);
  });
});

describe("the rig's git identity", () => {
  it("is author and committer of the polecat commits the merge strategy lands; the merge commit is the refinery's", async () => {
    const repo = await createRepo();
    const base = await repo.sha();
    await t.addRig({ name: 'identity', repo: repo.origin, gitIdentity: RIG_IDENTITY });
    const { handle } = await t.town.sling('identity', { id: 'identity-1', title: 'Work under an identity' });
    const result = await handle.result();
    expect(result.status).toBe('closed');

    const landed = await commits(repo.origin, `${base}..main`);
    const rigIdentity = `${RIG_IDENTITY.name} <${RIG_IDENTITY.email}>`;
    // The polecat's own commit, as it made it (the scripted agent's -c user.name loses to the run's identity).
    const [work, merge] = landed;
    expect(landed).toHaveLength(2);
    expect(work).toMatchObject({ subject: 'work for identity-1', author: rigIdentity, committer: rigIdentity });
    expect(merge).toMatchObject({
      sha: result.commit,
      parents: [base, work!.sha],
      author: REFINERY,
      committer: REFINERY,
    });
  });
});
