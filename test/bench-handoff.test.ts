/**
 * The bench's Temporal baseline (bench/handoff.ts) on a dev server of our own: what a step costs the server and the
 * worker in CPU with many chains at once, read from /proc, and the report's column for it. The production topology's
 * reading (PostgreSQL's processes counted with the server's) is checked in test/prod-stack.test.ts.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { COST_CHAINS, measureHandoffs, withHandoffServer, type HandoffFigures } from '../bench/handoff';
import { renderMarkdown, summarizeConvoy, summarizeQueue, type BenchReport } from '../bench/report';
import { repoRoot } from './helpers/town';

describe('the bench hand-off baseline', () => {
  it("measures a step's CPU in the server's process and in the worker, with our settings only", async () => {
    const ours = await withHandoffServer('ours', {}, (target) => {
      expect(target.serverPids?.(), "the dev server's pid (a dev server of our own CLI: npm run provision)").toEqual([
        expect.any(Number),
      ]);
      return measureHandoffs(target, 'ours', 3, 1);
    });
    const cost = ours[0]!.cost!;
    expect(cost.chains).toBe(COST_CHAINS);
    // Each step is an activity and a workflow task: a few ms of the server's CPU, which a wrong process would not show.
    expect(cost.serverMs).toBeGreaterThan(0.5);
    expect(cost.workerMs).toBeGreaterThan(0.5);
    expect(cost.wallMs).toBeGreaterThan(0);

    // At Temporal's defaults the queue readers' limit sets the pace of many chains, not the CPU: not measured there.
    const defaults = await withHandoffServer('server-default', {}, (target) =>
      measureHandoffs(target, 'server-default', 3, 1),
    );
    expect(defaults[0]!.cost).toBeUndefined();

    // The report shows it beside the latencies; a report from before it shows a dash.
    const file = join(repoRoot, 'bench', 'reports', '2026-12-02T23-43-56-017Z.json');
    const report = JSON.parse(readFileSync(file, 'utf8')) as BenchReport;
    for (const c of report.convoys) c.summary = summarizeConvoy(c.repeats);
    for (const q of report.mergeQueue) q.summary = summarizeQueue(q.repeats);
    const before = renderMarkdown(report);
    expect(before).toMatch(/CPU per activity step, many chains at once: server \/ worker \|/);
    expect(before).toMatch(/\| ours \|.* \| – \|\n/);
    const withCost = (h: HandoffFigures): HandoffFigures =>
      h.queueReaders === 'ours' ? { ...h, cost: { ...cost, serverMs: 7.2, workerMs: 4.5 } } : h;
    report.handoff = report.handoff!.map(withCost);
    const md = renderMarkdown(report);
    expect(md).toContain(`CPU per activity step, ${COST_CHAINS} chains at once: server / worker |`);
    expect(md).toMatch(/\| ours \|.* \| 7\.2 ms \/ 4\.5 ms \|\n/);
    expect(md).toMatch(/\| server-default \|.* \| – \|\n/);
  }, 120_000);
});
