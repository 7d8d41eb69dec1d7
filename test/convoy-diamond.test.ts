/**
 * Issue 5 acceptance: a diamond convoy A→{B,C}→D through the real CLI, dev server, git and scripted agents.
 * The dependency order is checked from workflow histories, not from timing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConvoyStatusView, ConvoySummary } from '../client/convoys';
import type { ConvoyResult } from '../domain/convoy';
import { beadStartedAt, convoyTimeline, firstLaunchOf, refineryMerges, writeSpec } from './helpers/convoy';
import { createRepo } from './helpers/repo';
import { agentScript, runGt, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

describe('a diamond convoy (review-and-merge)', () => {
  it('starts B and C only after A merged and D only after both, then lands with every change on the target', async () => {
    const repo = await createRepo();
    await t.addRig({ name: 'diamond', repo: repo.origin, agent: agentScript('convoy-instant') });
    const spec = writeSpec({
      id: 'dia',
      title: 'Diamond',
      rig: 'diamond',
      beads: [
        { id: 'd', title: 'D', dependsOn: ['b', 'c'] },
        { id: 'b', title: 'B', dependsOn: ['a'] },
        { id: 'c', title: 'C', dependsOn: ['a'] },
        { id: 'a', title: 'A' },
      ],
    });

    const run = await runGt(['convoy', 'start', spec, '--wait'], t.cliEnv(), 120_000);
    // The counts are those of the moment `--wait` looked: b and c may have merged by then too.
    expect(run.stderr).toMatch(/\] a: closed \([0-9a-f]{10}\) {2}· [1-4]\/4 merged/);
    expect(run.stderr).toMatch(/\] convoy landed: every bead merged into main/);
    expect(run.stdout).toMatch(/^status {3}landed/m);
    expect(run.code).toBe(0);

    const result = (await t.client.workflow.getHandle('convoy:dia').result()) as ConvoyResult;
    expect(result).toMatchObject({ status: 'landed', counts: { total: 4, closed: 4 } });
    for (const b of ['a', 'b', 'c', 'd']) expect(await repo.show(`work/dia-${b}.txt`)).toMatch(/^done by dia-/);
    expect((await repo.log())[0]!.sha).toBe(result.landedCommit);

    // The convoy's own history: each start is scheduled only after every dependency reported `closed`.
    const timeline = await convoyTimeline(t.client, 'dia');
    const at = (kind: 'report' | 'start', bead: string) =>
      timeline.findIndex((e) => e.kind === kind && e.beadId === bead);
    expect(timeline.filter((e) => e.kind === 'start').map((e) => e.beadId)).toEqual([
      'dia-a',
      'dia-b',
      'dia-c',
      'dia-d',
    ]);
    // One report per bead, from the refinery as it merged (the bead, told so through its outcome, sends none).
    const reports = timeline.filter((e) => e.kind === 'report');
    expect(reports.map((e) => e.beadId).sort()).toEqual(['dia-a', 'dia-b', 'dia-c', 'dia-d']);
    expect(reports.every((e) => e.status === 'closed' && e.from === 'refinery:diamond')).toBe(true);
    expect(at('start', 'dia-b')).toBeGreaterThan(at('report', 'dia-a'));
    expect(at('start', 'dia-c')).toBeGreaterThan(at('report', 'dia-a'));
    expect(at('start', 'dia-d')).toBeGreaterThan(Math.max(at('report', 'dia-b'), at('report', 'dia-c')));
    // B and C were ready together: one start for both.
    expect(timeline.find((e) => e.kind === 'start' && e.beadId === 'dia-b')!.at).toBe(
      timeline.find((e) => e.kind === 'start' && e.beadId === 'dia-c')!.at,
    );

    // The refinery's history agrees: every bead merged once, told to the convoy by the merge section as its push
    // landed (not by the refinery's next workflow task), and a dependent's workflow starts after its dependencies'
    // sections did.
    const reportedBy = await refineryMerges(t.client, 'diamond');
    expect([...reportedBy.keys()].sort()).toEqual(['dia-a', 'dia-b', 'dia-c', 'dia-d']);
    expect([...reportedBy.values()].map((r) => r.by)).toEqual(Array(4).fill('merge section'));
    const merged = new Map([...reportedBy].map(([bead, r]) => [bead, r.at]));
    const started = Object.fromEntries(
      await Promise.all(['a', 'b', 'c', 'd'].map(async (b) => [b, await beadStartedAt(t.client, `dia-${b}`)] as const)),
    );
    expect(started.b).toBeGreaterThanOrEqual(merged.get('dia-a')!);
    expect(started.c).toBeGreaterThanOrEqual(merged.get('dia-a')!);
    expect(started.d).toBeGreaterThanOrEqual(Math.max(merged.get('dia-b')!, merged.get('dia-c')!));

    // Status: a tree with runs, MR outcomes and commits; beads are searchable by convoy.
    const status = await runGt(['convoy', 'status', 'dia', '--json'], t.cliEnv());
    expect(status.code).toBe(0);
    const view = JSON.parse(status.stdout) as ConvoyStatusView;
    expect(view.convoy.status).toBe('landed');
    for (const b of view.beads) {
      expect(b.status).toBe('closed');
      expect(b.bead?.runs.map((r) => r.outcome)).toEqual(['done']);
      expect(b.bead?.rounds.map((r) => r.outcome?.kind)).toEqual(['merged']);
      expect(b.commit).toBe(b.bead?.mergedCommit);
    }

    // A dependent's first run is told its dependencies' merges, and starts from its host's mirror without a fetch:
    // the refinery pushed those merges from that mirror. The root knows of none and fetches (docs/performance.md).
    const commit = Object.fromEntries(view.beads.map((b) => [b.id, b.commit]));
    expect(await firstLaunchOf(t.client, 'dia-a')).toEqual({ targetHas: undefined, fetched: true });
    for (const b of ['b', 'c'])
      expect(await firstLaunchOf(t.client, `dia-${b}`)).toEqual({ targetHas: [commit.a], fetched: false });
    // B and C may have merged in one batch, as one commit: D is told each distinct commit once.
    const d = await firstLaunchOf(t.client, 'dia-d');
    expect(d.targetHas?.sort()).toEqual([...new Set([commit.b, commit.c])].sort());
    expect(d.fetched).toBe(false);

    const tree = await runGt(['convoy', 'status', 'dia'], t.cliEnv());
    expect(tree.stdout).toMatch(/^✓ a +closed/m);
    expect(tree.stdout).toMatch(/^ {4}✓ d +closed +b,c +r1\/a1 done +r1 merged +[0-9a-f]{10}/m);
    expect((await t.client.workflow.count(`GtConvoyId = 'dia' AND GtKind = 'bead'`)).count).toBe(4);
    // Watching a convoy that already landed ends at once with its tree and exit 0.
    const watch = await runGt(['convoy', 'watch', 'dia'], t.cliEnv());
    expect(watch.code, watch.stderr).toBe(0);
    expect(watch.stderr).toMatch(/convoy landed/);
    expect(watch.stdout).toMatch(/^ {4}✓ d +closed/m);

    const list = await runGt(['convoy', 'list', '--json'], t.cliEnv());
    const row = (JSON.parse(list.stdout) as ConvoySummary[]).find((c) => c.convoyId === 'dia');
    expect(row).toMatchObject({ status: 'landed', rig: 'diamond', title: 'Diamond', counts: { closed: 4, total: 4 } });
  });
});
