/**
 * Scale: a convoy keeps a small record per bead and continues-as-new, so its history stays bounded however many
 * beads it has (failure class 10's cousin: a big convoy must not hit Temporal's history limits and get stuck).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConvoyClient } from '../client/convoys';
import type { ConvoyResult } from '../domain/convoy';
import { convoyTimeline, runsOf } from './helpers/convoy';
import { createRepo } from './helpers/repo';
import { agentScript, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
let convoys: ConvoyClient;
beforeAll(async () => {
  t = await startTestTown();
  convoys = new ConvoyClient(t.town);
});
afterAll(async () => {
  await t?.stop();
});

/** Layers of beads, each depending on two beads of the layer before: wide enough to run in parallel, deep enough to order. */
function layeredBeads(count: number, width: number) {
  return Array.from({ length: count }, (_, i) => {
    const layer = Math.floor(i / width);
    const dependsOn =
      layer === 0 ? [] : [`b${(layer - 1) * width + (i % width)}`, `b${(layer - 1) * width + ((i + 1) % width)}`];
    return { id: `b${i}`, title: `Bead ${i}`, dependsOn };
  });
}

async function maxHistoryLength(query: string): Promise<{ workflowId: string; length: number }> {
  let max = { workflowId: '', length: 0 };
  for await (const wf of t.client.workflow.list({ query }))
    if (wf.historyLength > max.length) max = { workflowId: wf.workflowId, length: wf.historyLength };
  return max;
}

describe('a large convoy', () => {
  it('continues-as-new carrying its state, and still starts every bead after its dependencies, exactly once', async () => {
    const repo = await createRepo();
    await t.addRig({
      name: 'can',
      repo: repo.origin,
      agent: agentScript('convoy-instant'),
      maxPolecats: 8,
      batchSize: 8,
    });
    // Enough beads for several continuations whatever the timing (reports batch up when agents finish together).
    const beads = layeredBeads(36, 6);
    await convoys.start(
      { id: 'can', title: 'Continue as new', rig: 'can', beads },
      { options: { continueAsNewAfterEvents: 50 } },
    );
    const result = (await t.client.workflow.getHandle('convoy:can').result()) as ConvoyResult;
    expect(result).toMatchObject({ status: 'landed', counts: { total: beads.length, closed: beads.length } });

    const runs = await runsOf(t.client, 'convoy:can');
    expect(runs.length).toBeGreaterThan(2);
    expect((await convoys.state('can')).continuedAsNew).toBe(runs.length - 1);
    const timeline = await convoyTimeline(t.client, 'can');
    const starts = timeline.filter((e) => e.kind === 'start').map((e) => e.beadId);
    expect([...starts].sort()).toEqual(beads.map((b) => `can-${b.id}`).sort());
    for (const b of beads) {
      const start = timeline.findIndex((e) => e.kind === 'start' && e.beadId === `can-${b.id}`);
      for (const d of b.dependsOn)
        expect(start, `${b.id} after ${d}`).toBeGreaterThan(
          timeline.findIndex((e) => e.kind === 'report' && e.beadId === `can-${d}`),
        );
    }
  });

  // Minutes, not seconds (every bead is a real agent process, branch push and gated merge): opt in with GT_SCALE_TESTS=1.
  it.runIf(!!process.env.GT_SCALE_TESTS)(
    'of 300 beads with instant agents lands, and no workflow history exceeds 10,240 events',
    async () => {
      const repo = await createRepo();
      await t.addRig({
        name: 'big',
        repo: repo.origin,
        agent: agentScript('convoy-instant'),
        maxPolecats: 16,
        batchSize: 32,
      });
      await convoys.start({ id: 'big', title: 'Three hundred beads', rig: 'big', beads: layeredBeads(300, 50) });
      const result = (await t.client.workflow.getHandle('convoy:big').result()) as ConvoyResult;
      expect(result).toMatchObject({ status: 'landed', counts: { total: 300, closed: 300 } });
      const files = (await repo.show('work/big-b299.txt')) ?? '';
      expect(files).toMatch(/^done by big-b299/);

      for (const query of [`WorkflowId = 'convoy:big'`, `GtConvoyId = 'big'`, `WorkflowId = 'refinery:big'`]) {
        const max = await maxHistoryLength(query);
        expect(max.length, `${max.workflowId} (${query})`).toBeLessThanOrEqual(10_240);
        expect(max.length).toBeGreaterThan(0);
      }
    },
    600_000,
  );
});
