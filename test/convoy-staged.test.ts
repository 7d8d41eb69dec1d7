/**
 * Staged convoys (plan recorded, nothing dispatched; beads added/removed/edited; then launched) and adding beads
 * to a running convoy — each edit validated by the workflow's update validator, so a rejected edit changes nothing.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConvoyClient } from '../client/convoys';
import type { ConvoyResult } from '../domain/convoy';
import { beadExists as beadWorkflowExists, convoyTimeline, writeSpec } from './helpers/convoy';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, runGt, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
let convoys: ConvoyClient;
beforeAll(async () => {
  t = await startTestTown();
  convoys = new ConvoyClient(t.town);
});
afterAll(async () => {
  await t?.stop();
});

const beadExists = (beadId: string) => beadWorkflowExists(t.client, beadId);

describe('a staged convoy', () => {
  it('records the plan without dispatching, takes edits, rejects bad ones unchanged, and runs once launched', async () => {
    const repo = await createRepo();
    await t.addRig({ name: 'staged', repo: repo.origin, agent: agentScript('convoy-instant') });
    const spec = writeSpec({
      id: 'st',
      title: 'Staged',
      rig: 'staged',
      beads: [
        { id: 'a', title: 'A' },
        { id: 'b', title: 'B', dependsOn: ['a'] },
        { id: 'c', title: 'C', dependsOn: ['a'] },
      ],
    });
    const staged = await runGt(['convoy', 'start', spec, '--staged'], t.cliEnv());
    expect(staged.stdout.trim()).toBe(
      'convoy st staged (3 beads); edit it with `gt convoy add|remove|edit`, start it with `gt convoy launch st`',
    );
    expect((await convoys.state('st')).status).toBe('staged');
    expect(await beadExists('st-a')).toBe(false);

    await convoys.edit('st', { op: 'edit', bead: { id: 'b', title: 'B, retitled', description: 'now with details' } });
    await convoys.edit('st', { op: 'remove', ids: ['c'] });
    await convoys.addBeads('st', { beads: [{ id: 'd', title: 'D', dependsOn: ['b'] }] });
    const before = await convoys.state('st');
    const refused = await runGt(['convoy', 'remove', 'st', 'a'], t.cliEnv());
    expect(refused.stderr).toBe("gt: cannot remove 'a': 'b' depends on it (remove or edit 'b' too)\n");
    expect(refused.code).toBe(1);
    await expect(convoys.addBeads('st', [{ id: 'e', title: 'E', dependsOn: ['e'] }])).rejects.toThrow(
      'dependency cycle e → e (each depends on the next)',
    );
    await expect(convoys.edit('st', { op: 'edit', bead: { id: 'a', dependsOn: ['d'] } })).rejects.toThrow(
      'dependency cycle a → d → b → a (each depends on the next)',
    );
    await expect(convoys.addBeads('st', [{ id: 'f', title: '' }])).rejects.toThrow(
      'invalid bead beads.0: title: title must not be empty',
    );
    expect(await convoys.state('st')).toEqual(before);
    expect(before.beads.map((b) => [b.id, b.dependsOn])).toEqual([
      ['a', []],
      ['b', ['a']],
      ['d', ['b']],
    ]);

    const launched = await convoys.launch('st');
    expect(launched.status).toBe('running');
    await expect(convoys.launch('st')).rejects.toThrow(
      /^convoy st is not staged \(it is (running|landed)\)$|^convoy 'st' has already ended/,
    );
    const result = (await t.client.workflow.getHandle('convoy:st').result()) as ConvoyResult;
    expect(result).toMatchObject({ status: 'landed', counts: { total: 3, closed: 3 } });
    expect(await beadExists('st-c')).toBe(false);
    expect((await t.town.beadState('st-b')).title).toBe('B, retitled');
    expect(await repo.show('work/st-d.txt')).toMatch(/^done by st-d/);
    await expect(convoys.edit('st', { op: 'remove', ids: ['a'] })).rejects.toThrow(
      "convoy 'st' has already ended (completed)",
    );
  });

  it('can be closed before launch without starting anything', async () => {
    const repo = await createRepo();
    await t.addRig({ name: 'staged-close', repo: repo.origin });
    await convoys.start(
      { id: 'stc', title: 'Never launched', rig: 'staged-close', beads: [{ id: 'a', title: 'A' }] },
      { staged: true },
    );
    const closed = await convoys.close('stc', { reason: 'plan abandoned' });
    expect(closed).toMatchObject({ status: 'closed', reason: 'closed by an operator: plan abandoned' });
    expect(closed.beads[0]).toMatchObject({
      status: 'cancelled',
      reason: 'never started: convoy closed: plan abandoned',
    });
    expect(await beadExists('stc-a')).toBe(false);
  });
});

describe('a running convoy', () => {
  it('takes new beads (validated) and starts them when their dependencies merge', async () => {
    const repo = await createRepo();
    const testDir = mkdtempSync(join(tmpdir(), 'gt-add-'));
    await t.addRig({
      name: 'adding',
      repo: repo.origin,
      agent: agentScript('convoy-instant'),
      env: { TEST_DIR: testDir, HOLD_BEADS: 'a' },
    });
    await convoys.start({ id: 'ad', title: 'Growing', rig: 'adding', beads: [{ id: 'a', title: 'A' }] });
    await eventually(
      async () => (await t.town.beadState('ad-a').catch(() => undefined))?.status === 'in_progress',
      30_000,
      'bead a running',
    );

    await expect(convoys.addBeads('ad', [{ id: 'y', title: 'Y', dependsOn: ['nope'] }])).rejects.toThrow(
      "bead 'y' depends on 'nope', which is not in the convoy",
    );
    await expect(convoys.edit('ad', { op: 'remove', ids: ['a'] })).rejects.toThrow(
      'beads can be removed only while the convoy is staged; convoy ad is running (add new beads instead)',
    );
    const grown = await convoys.addBeads('ad', [{ id: 'z', title: 'Z', dependsOn: ['a'] }]);
    expect(grown.beads.map((b) => [b.id, b.status])).toEqual([
      ['a', 'running'],
      ['z', 'pending'],
    ]);
    writeFileSync(join(testDir, 'release'), '');

    const result = (await t.client.workflow.getHandle('convoy:ad').result()) as ConvoyResult;
    expect(result).toMatchObject({ status: 'landed', counts: { total: 2, closed: 2 } });
    const timeline = await convoyTimeline(t.client, 'ad');
    const at = (kind: 'report' | 'start', bead: string) =>
      timeline.findIndex((e) => e.kind === kind && e.beadId === bead);
    expect(at('start', 'ad-z')).toBeGreaterThan(at('report', 'ad-a'));
  });
});
