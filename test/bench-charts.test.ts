/**
 * Issue 17: the bench's charts. Every committed report embeds its charts, every chart it embeds exists and is what
 * `--render` draws from the report's JSON now (so the committed SVGs cannot drift from the figures), and the README
 * shows one of them. Pure file checks: no Temporal needed.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { benchCharts } from '../bench/charts';
import { summarizeConvoy, summarizeQueue, type BenchReport } from '../bench/report';
import { repoRoot } from './helpers/town';

const dir = join(repoRoot, 'bench', 'reports');
const reports = readdirSync(dir).filter((f) => f.endsWith('.json'));
const load = (file: string) => {
  const report = JSON.parse(readFileSync(join(dir, file), 'utf8')) as BenchReport;
  for (const c of report.convoys) c.summary = summarizeConvoy(c.repeats);
  for (const q of report.mergeQueue) q.summary = summarizeQueue(q.repeats);
  return report;
};

describe('bench report charts', () => {
  it.each(reports)('%s embeds its charts, as the report draws them', (file) => {
    const report = load(file);
    const stamp = file.replace(/\.json$/, '');
    const md = readFileSync(join(dir, `${stamp}.md`), 'utf8');
    const embedded = [...md.matchAll(/!\[(\w+)\]\(([^)]+)\)/g)].map((m) => [m[1]!, m[2]!] as const);
    const charts = benchCharts(report);
    expect(embedded).toEqual(expect.arrayContaining(charts.map((c) => [c.name, `${stamp}-${c.name}.svg`] as const)));
    expect(embedded).toHaveLength(charts.length);
    for (const c of charts) {
      expect(
        readFileSync(join(dir, `${stamp}-${c.name}.svg`), 'utf8'),
        `${c.name} differs from what --render draws`,
      ).toBe(c.svg);
      expect(c.svg).toMatch(/^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"[^>]*>[\s\S]*<\/svg>\n$/);
      expect(c.svg).not.toMatch(/NaN|undefined|Infinity/);
    }
  });

  it('draws one point per scenario and width on the makespan chart, one bar per queue mode', () => {
    const report = load('2026-11-25T16-28-41-138Z.json');
    const charts = Object.fromEntries(benchCharts(report).map((c) => [c.name, c.svg]));
    // Six scenarios, orchestrated and floor each.
    expect(charts.makespan!.match(/<circle class="point"/g)).toHaveLength(report.convoys.length * 2);
    expect(charts.ratio!.match(/<circle class="point"/g)).toHaveLength(report.convoys.length);
    expect(charts.queue!.match(/<rect class="bar"/g)).toHaveLength(report.mergeQueue.length);
    expect(charts.hops!.match(/<circle class="p50"/g)!.length).toBeGreaterThanOrEqual(report.convoys.length * 8);
    expect(charts.handoff).toBeUndefined();
  });

  it('the README shows a committed chart', () => {
    const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
    const images = [...readme.matchAll(/!\[[^\]]*\]\((bench\/reports\/[^)]+\.svg)\)/g)].map((m) => m[1]!);
    expect(images.length).toBeGreaterThanOrEqual(1);
    for (const image of images) expect(existsSync(join(repoRoot, image)), image).toBe(true);
  });
});
