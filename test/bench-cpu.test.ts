/**
 * The bench's CPU accounting (bench/cpu.ts): what /proc says a busy process and the machine spent, the figures per
 * bead made of it, and the report's table. Real processes, no Temporal needed.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cpuFigures } from '../bench/analysis';
import { cpuMark, cpuSpent } from '../bench/cpu';
import { renderMarkdown, summarizeConvoy, summarizeQueue, type BenchReport } from '../bench/report';
import { repoRoot } from './helpers/town';

/** Spends `ms` of this process's own CPU (not of the wall clock: the machine may be busy with other work). */
const burn = (ms: number) => {
  const from = process.cpuUsage();
  while (process.cpuUsage(from).user + process.cpuUsage(from).system < ms * 1000);
};

describe('bench CPU accounting', () => {
  it("reads a server's, this process's and the machine's CPU from /proc", async () => {
    // The "server": a process that spends 300 ms of CPU when told to (after the first mark), says so, then idles.
    const server = spawn(
      process.execPath,
      [
        '-e',
        `process.stdin.once('data', () => {
           const f = process.cpuUsage();
           while (process.cpuUsage(f).user + process.cpuUsage(f).system < 300_000);
           console.log('burnt');
         });`,
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    try {
      await new Promise((resolve) => server.once('spawn', resolve));
      const from = cpuMark(server.pid);
      const burnt = new Promise((resolve) => server.stdout.once('data', resolve));
      server.stdin.write('go\n');
      burn(300);
      await burnt;
      const spent = cpuSpent(from, cpuMark(server.pid));
      expect(spent).toBeDefined();
      expect(spent!.selfMs).toBeGreaterThanOrEqual(300);
      // Clock ticks of 10 ms: a little slack.
      expect(spent!.serverMs).toBeGreaterThanOrEqual(280);
      expect(spent!.serverMs).toBeLessThan(spent!.wallMs + 50);
      // The machine's busy time holds both.
      expect(spent!.machineMs).toBeGreaterThanOrEqual(spent!.selfMs + spent!.serverMs! - 50);
      expect(spent!.cores).toBeGreaterThanOrEqual(1);
    } finally {
      server.kill('SIGKILL');
    }
  });

  it('has no server figure for a process that is gone, and no figures at all without both marks', () => {
    const gone = 2 ** 22 + 12345; // above the kernel's pid limit: never a process
    const spent = cpuSpent(cpuMark(gone), cpuMark(gone));
    expect(spent?.serverMs).toBeUndefined();
    expect(cpuSpent(undefined, cpuMark())).toBeUndefined();
  });

  it('divides by the beads, and the rest is what neither the server nor the worker spent', () => {
    const ours = { wallMs: 10_000, machineMs: 16_000, serverMs: 4_000, selfMs: 5_000, cores: 2 };
    const floor = { wallMs: 4_000, machineMs: 4_000, selfMs: 500, cores: 2 };
    expect(cpuFigures(ours, floor, 40)).toEqual({
      floorPerBeadMs: 100,
      perBeadMs: 400,
      serverPerBeadMs: 100,
      workerPerBeadMs: 125,
      restPerBeadMs: 175,
      floorBusy: 0.5,
      busy: 0.8,
    });
    expect(cpuFigures(undefined, floor, 40)).toBeUndefined();
  });

  it('shows a table of CPU per bead when the repeats measured it, and none for reports from before', () => {
    const file = join(repoRoot, 'bench', 'reports', '2026-12-02T23-43-56-017Z.json');
    const report = JSON.parse(readFileSync(file, 'utf8')) as BenchReport;
    const render = () => {
      for (const c of report.convoys) c.summary = summarizeConvoy(c.repeats);
      for (const q of report.mergeQueue) q.summary = summarizeQueue(q.repeats);
      return renderMarkdown(report);
    };
    expect(render()).not.toMatch(/## CPU per bead/);
    const wide = report.convoys.find((c) => c.width === 16)!;
    wide.repeats = wide.repeats.map((r, i) => ({
      ...r,
      cpu: {
        floorPerBeadMs: 100 + i,
        perBeadMs: 400 + i,
        serverPerBeadMs: 100,
        workerPerBeadMs: 100,
        restPerBeadMs: 200 + i,
        floorBusy: 0.9,
        busy: 0.97,
      },
    }));
    const md = render();
    expect(md).toMatch(/## CPU per bead/);
    expect(md).toContain(
      `| ${wide.n} | 16 | 101 ms (100 ms–102 ms) | 401 ms (400 ms–402 ms) | 3.97× | 100 ms | 100 ms |`,
    );
    expect(md).toMatch(/\| 90 % \/ 97 % \|/);
  });
});
