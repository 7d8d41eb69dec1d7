/**
 * Issue 5 acceptance, review-then-land: beads merge into convoy/<id>; the target does not move until the one
 * landing merge request, whose gates run on the whole convoy. Real dev server, git and scripted agents.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { simpleGit } from 'simple-git';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConvoyClient } from '../client/convoys';
import type { ConvoyResult } from '../domain/convoy';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, runGt, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

describe('a review-then-land convoy', () => {
  it('leaves the target alone until the landing merge request, which is gated on the whole and brings every bead', async () => {
    const repo = await createRepo();
    const initial = await repo.sha('main');
    const testDir = mkdtempSync(join(tmpdir(), 'gt-land-'));
    const gatesLog = join(testDir, 'gates.log');
    // Every gate run records its target, where the target branch is at that moment, and the files of the candidate.
    const gate = `echo "$GT_TARGET_BRANCH main=$(git --git-dir=${repo.origin} rev-parse main) files=$(ls work | sort | tr '\\n' ' ')" >> ${gatesLog}`;
    await t.addRig({ name: 'landing', repo: repo.origin, agent: agentScript('convoy-instant'), gates: [gate] });

    const convoys = new ConvoyClient(t.town);
    await convoys.start({
      id: 'rtl',
      title: 'Land together',
      rig: 'landing',
      mergeMode: 'review-then-land',
      beads: [
        { id: 'a', title: 'A' },
        { id: 'b', title: 'B', dependsOn: ['a'] },
        { id: 'c', title: 'C' },
      ],
    });
    const result = (await t.client.workflow.getHandle('convoy:rtl').result()) as ConvoyResult;
    expect(result).toMatchObject({ status: 'landed', counts: { closed: 3, total: 3 } });

    // The target moved exactly once, by the landing merge of the convoy branch.
    const firstParent = (await simpleGit(repo.origin).raw(['log', '--first-parent', '--format=%H', 'main']))
      .trim()
      .split('\n');
    expect(firstParent).toEqual([result.landedCommit, initial]);
    const state = await convoys.state('rtl');
    expect(state.convoyBranch).toBe('convoy/rtl');
    expect(state.landing).toMatchObject({
      round: 1,
      mrId: 'mr:rtl:landing1',
      outcome: { kind: 'merged', commit: result.landedCommit },
    });
    expect((await repo.log())[0]!.body).toContain(`Gt-Merge-Request: mr:rtl:landing1@${state.landing!.headSha}`);
    // It merged the convoy branch's head (the landing's second parent: the rig merges with --no-ff).
    expect(await repo.sha(`${result.landedCommit}^2`)).toBe(state.landing!.headSha);
    for (const b of ['a', 'b', 'c']) expect(await repo.show(`work/rtl-${b}.txt`)).toMatch(/^done by rtl-/);

    // Beads merged into the convoy branch while main stayed at its initial commit; the landing gate saw everything.
    const runs = readFileSync(gatesLog, 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.trim());
    // Three bead merges into the convoy branch — two gate runs when a and c met in the queue and were batched — then
    // the landing.
    expect(runs.length).toBeGreaterThanOrEqual(3);
    expect(runs.length).toBeLessThanOrEqual(4);
    for (const line of runs.slice(0, -1)) expect(line).toMatch(new RegExp(`^convoy/rtl main=${initial} `));
    expect(runs.at(-1)).toBe(`main main=${initial} files=rtl-a.txt rtl-b.txt rtl-c.txt`);

    // The dependent bead was built on the convoy branch after its dependency merged there.
    const beadB = await t.town.beadState('rtl-b');
    expect(beadB.targetBranch).toBe('convoy/rtl');
    const mergeOfB = (await repo.log()).find((c) => c.subject.includes('(rtl-b)'))!;
    const headOfB = /Gt-Merge-Request: \S+@([0-9a-f]{40})/.exec(mergeOfB.body)![1]!;
    expect(await repo.show('work/rtl-a.txt', headOfB)).toMatch(/^done by rtl-a/);

    // Once merged, the beads' branches and the convoy's are deleted from the repository (activities/merged-branches.ts).
    const branches = async () =>
      (await simpleGit(repo.origin).raw(['for-each-ref', '--format=%(refname:short)', 'refs/heads/'])).trim();
    await expect.poll(branches, { timeout: 20_000 }).toBe('main');
  });

  it('waits for an operator when the landing is not merged, and lands on `gt convoy land` once fixed', async () => {
    const repo = await createRepo();
    const initial = await repo.sha('main');
    const testDir = mkdtempSync(join(tmpdir(), 'gt-land-'));
    const blocker = join(testDir, 'block-landing');
    writeFileSync(blocker, '');
    // Bead merges (into the convoy branch) pass; the landing (into main) fails while the blocker exists.
    await t.addRig({
      name: 'landing-retry',
      repo: repo.origin,
      agent: agentScript('convoy-instant'),
      gates: [`[ "$GT_TARGET_BRANCH" != main ] || [ ! -f ${blocker} ]`],
    });
    const convoys = new ConvoyClient(t.town);
    await convoys.start({
      id: 'rtl2',
      title: 'Land later',
      rig: 'landing-retry',
      mergeMode: 'review-then-land',
      beads: [{ id: 'a', title: 'A' }],
    });

    const waiting = await eventually(
      async () => {
        const s = await convoys.state('rtl2');
        return s.landing?.outcome?.kind === 'gates_failed' && s.waitingFor.startsWith('an operator') ? s : undefined;
      },
      60_000,
      'the failed landing',
    );
    expect(waiting.status).toBe('landing');
    expect(waiting.escalations).toEqual(['convoy-rtl2.landing.1']);
    expect(await repo.sha('main')).toBe(initial);
    const escalations = await t.town.listEscalations();
    expect(escalations.find((e) => e.id === 'convoy-rtl2.landing.1')?.reason).toMatch(
      /^convoy rtl2: landing merge request mr:rtl2:landing1 was not merged \(gates_failed\)/,
    );

    // Nothing to retry is refused; a retry after the fix lands in round 2.
    rmSync(blocker);
    const retry = await runGt(['convoy', 'land', 'rtl2'], t.cliEnv());
    expect(retry.code).toBe(0);
    const again = await runGt(['convoy', 'land', 'rtl2'], t.cliEnv());
    expect(again.code).toBe(1);
    // (Depending on how far the retry got: still landing, or already landed.)
    expect(again.stderr).toMatch(
      /^gt: (convoy rtl2 has no failed landing to retry \(it is landing\)|convoy 'rtl2' has already ended \(completed\))\n$/,
    );
    const result = (await t.client.workflow.getHandle('convoy:rtl2').result()) as ConvoyResult;
    expect(result.status).toBe('landed');
    expect((await convoys.state('rtl2')).landing).toMatchObject({
      round: 2,
      mrId: 'mr:rtl2:landing2',
      outcome: { kind: 'merged' },
    });
    expect(await repo.show('work/rtl2-a.txt')).toMatch(/^done by rtl2-a/);
  });
});
