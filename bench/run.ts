/**
 * `npm run bench`: what the orchestration costs, side by side with the raw git work.
 *
 * On one embedded stack (dev server + town worker, as `gt up`), for each N and DAG width: the floor script and an
 * orchestrated convoy on scratch repositories, repeated; then the merge queue with a slow gate, one MR at a time
 * and in batches; before the stack starts, the CLI's start-up (`--only cli`: that alone). Writes
 * bench/reports/<time>.{json,md} and latest.md. See bench/README.md.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { convoyFigures, queueFigures } from './analysis';
import { measureCliStartup, type CliStartupFigures } from './cli-startup';
import { runFloor } from './floor';
import { describeHandoffs, devServerTarget, measureHandoffs, withHandoffServer, type HandoffFigures } from './handoff';
import { createOrigin } from './git';
import { machineInfo } from './machine';
import { parseOptions, repeatsFor, type BenchOptions } from './options';
import { runOrchestrated } from './orchestrated';
import {
  renderMarkdown,
  rerender,
  summarizeConvoy,
  summarizeQueue,
  writeReport,
  type BenchReport,
  type ConvoyScenarioReport,
  type QueueScenarioReport,
} from './report';
import { DEFAULT_BATCH_SIZE } from '../domain/rig';
import { badBeads } from './scenario';
import type { BenchStack } from './stack';
import { startStack } from './stack';

const TRIVIAL_GATE = 'test -f README.md';
const HANDOFF_STEPS = 60;
const HANDOFF_REPEATS = 3;
const slowGate = (seconds: number) => `sleep ${seconds} && test -z "$(find work -name '*.bad' 2>/dev/null)"`;
/** Generous: a healthy run takes a fraction of this; a stuck one must not stall the whole bench. */
const deadlineFor = (beads: number) => 120_000 + beads * 20_000;

const benchStart = Date.now();
const log = (message: string) =>
  console.error(`[bench ${((Date.now() - benchStart) / 1000).toFixed(0).padStart(4)} s] ${message}`);
const label = (prefix: string) => `${prefix}-${randomBytes(3).toString('hex')}`;
const fmt = (msec: number) => `${(msec / 1000).toFixed(2)} s`;

/** Runs every repeat of one scenario into `into` as it goes, so an interrupted bench still reports what it has. */
async function eachRepeat<F>(
  into: { repeats: F[]; failures: string[] },
  count: number,
  what: string,
  once: (repeat: number) => Promise<{ figures: F; line: string } | { failure: string }>,
): Promise<void> {
  for (let r = 1; r <= count; r++) {
    let outcome: { figures: F; line: string } | { failure: string };
    try {
      outcome = await once(r);
    } catch (err) {
      // One broken run must not cost the rest of the bench.
      outcome = { failure: `${what} repeat ${r}: error: ${((err as Error).message ?? String(err)).split('\n')[0]}` };
    }
    if ('failure' in outcome) {
      into.failures.push(outcome.failure);
      log(`${outcome.failure} — left out of the figures`);
    } else {
      into.repeats.push(outcome.figures);
      log(`${what} repeat ${r}/${count}: ${outcome.line}`);
    }
  }
}

async function convoyScenario(
  stack: BenchStack,
  scratch: string,
  o: BenchOptions,
  n: number,
  width: number,
  into: ConvoyScenarioReport,
): Promise<void> {
  await eachRepeat(into, repeatsFor(o, n), `N=${n} width=${width}`, async (r) => {
    const name = label(`c${n}w${width}r${r}`);
    const root = join(scratch, name);
    const gates = [TRIVIAL_GATE];
    const floor = await runFloor({
      root: join(root, 'floor'),
      origin: await createOrigin(join(root, 'floor')),
      n,
      width,
      gates,
    });
    const run = await runOrchestrated({
      stack,
      root: join(root, 'town'),
      origin: await createOrigin(join(root, 'town')),
      label: name,
      n,
      width,
      gates,
      driver: o.driver,
      maxPolecats: width,
      batchSize: o.convoyBatchSize,
      deadlineMs: deadlineFor(n),
    });
    if (run.status !== 'landed')
      return {
        failure: `N=${n} width=${width} repeat ${r} (${name}): ${o.driver} ended ${run.status} after ${fmt(run.makespanMs)}`,
      };
    const f = convoyFigures(run, floor, width);
    return {
      figures: f,
      line: `makespan ${fmt(f.makespanMs)}, floor ${fmt(f.floorMakespanMs)}, ratio ${f.ratio.toFixed(2)}×, overhead p50 ${fmt(f.overhead.p50 ?? NaN)}`,
    };
  });
  into.summary = summarizeConvoy(into.repeats);
}

async function queueScenario(
  stack: BenchStack,
  scratch: string,
  o: BenchOptions,
  into: QueueScenarioReport,
): Promise<void> {
  const { batchSize } = into;
  const speculation = into.speculation ?? 1;
  const bad = badBeads(o.queueMrs, o.queueBad);
  await eachRepeat(into, o.queueRepeats, `merge queue ${into.mode}`, async (r) => {
    const name = label(`q${o.queueMrs}b${batchSize}s${speculation}r${r}`);
    const root = join(scratch, name);
    const run = await runOrchestrated({
      stack,
      root,
      origin: await createOrigin(root),
      label: name,
      n: o.queueMrs,
      // Independent beads, all in flight: every MR reaches the queue, which is released once it holds them all.
      width: o.queueMrs,
      gates: [slowGate(o.gateSeconds)],
      driver: o.driver,
      maxPolecats: Math.min(o.queueMrs, 16),
      batchSize,
      speculation,
      bad,
      // A bad change stays bad: one round, so it is sent back once and fails instead of looping through rework.
      maxRounds: 1,
      fillQueueFirst: true,
      deadlineMs: deadlineFor(o.queueMrs * Math.max(1, o.gateSeconds)),
    });
    // With bad MRs the convoy cannot land; it must end, with exactly the good ones merged.
    const f = queueFigures(run, { batchSize, speculation }, bad.size);
    if (run.status === 'timed out' || f.merged !== o.queueMrs - bad.size) {
      const unmerged = run.beads
        .filter((b) => !bad.has(b.index) && b.status !== 'closed')
        .map((b) => `${b.beadId} ${b.status ?? 'unfinished'}: ${(b.reason ?? '').split('\n')[0]}`);
      return {
        failure: `merge queue ${into.mode} repeat ${r} (${name}): ${run.status}, ${f.merged} of ${o.queueMrs - bad.size} good MRs merged${unmerged.length ? ` (${unmerged.join('; ')})` : ''}`,
      };
    }
    return { figures: f, line: `${f.merged} merged, ${f.gateRuns} gate runs, drain ${fmt(f.drainMs)}` };
  });
  into.summary = summarizeQueue(into.repeats);
}

async function main() {
  const o = parseOptions(process.argv.slice(2));
  if (o.render) {
    log(`re-rendered ${rerender(o.render)}`);
    return;
  }
  const startedAt = new Date();
  if (o.only === 'cli') {
    await cliStartupOnly(o, startedAt);
    return;
  }
  const queueOnly = o.only === 'queue';
  // Before the stack starts: its dev server and worker would load the machine.
  if (!queueOnly) log(`CLI start-up: ${o.cliRuns} runs of each command…`);
  const cliStartup = queueOnly ? undefined : await measureCliStartup(o.cliRuns);
  const scratch = mkdtempSync(join(tmpdir(), 'gt-bench-'));
  mkdirSync(scratch, { recursive: true });
  const stack = await startStack(log);
  const cleanUp = async () => {
    log('stopping the stack…');
    await stack.stop();
    if (!o.keepScratch) {
      rmSync(scratch, { recursive: true, force: true });
      rmSync(stack.gtHome, { recursive: true, force: true });
    } else log(`scratch kept: ${scratch} and ${stack.gtHome}`);
  };
  const machine = await machineInfo(stack.server.cli);
  let handoff: HandoffFigures[] | undefined;
  const convoys: ConvoyScenarioReport[] = [];
  const mergeQueue: QueueScenarioReport[] = [];
  const notes: string[] = [
    o.driver === 'convoy'
      ? 'Orchestrated runs are real convoys (ConvoyClient.start → convoyWorkflow → beads).'
      : 'Orchestrated runs sling each bead directly when its dependency has closed (--driver sling): no convoy workflow.',
    o.convoyBatchSize === undefined
      ? `The convoys' rig has the product's merge-queue defaults: batches of up to ${DEFAULT_BATCH_SIZE} waiting MRs, halved after a failed batch (earlier reports, up to the 2026-11-30T13:00 one, merged one at a time); the floor merges and gates each bead on its own.`
      : `The convoys' rig merges ${o.convoyBatchSize === 1 ? 'one MR at a time' : `batches of up to ${o.convoyBatchSize} waiting MRs`} (--convoy-batch-size; the product's default is ${DEFAULT_BATCH_SIZE}); the floor merges and gates each bead on its own.`,
  ];

  const report = (): BenchReport => {
    for (const c of convoys) c.summary = summarizeConvoy(c.repeats);
    for (const q of mergeQueue) q.summary = summarizeQueue(q.repeats);
    return {
      ...reportHeader(startedAt, machine),
      parameters: {
        ...o,
        skip: [...o.skip],
        scenarios: o.scenarios.map((c) => `${c.n}x${c.width}`),
        repeatsPerN: Object.fromEntries(o.scenarios.map(({ n }) => [n, repeatsFor(o, n)])),
        convoyGates: [TRIVIAL_GATE],
        queueGate: slowGate(o.gateSeconds),
        agent: 'bench/agents/instant.sh',
        server: 'embedded Temporal dev server, SQLite file (as `gt up`)',
        policies: 'product defaults (merge-queue bench: maxRounds 1)',
      },
      cliStartup,
      handoff,
      convoys,
      mergeQueue,
      notes,
    };
  };
  const publish = (r: BenchReport) => {
    const paths = writeReport(o.out, r, { latest: !queueOnly });
    console.log(renderMarkdown(r));
    log(`report: ${paths.md} (and ${paths.json}, ${paths.latest ?? ''})`);
  };

  // Ctrl-C stops everything, reports what was measured so far, and leaves no dev server or scratch behind.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      log(`${signal}: interrupted; reporting what was measured so far`);
      notes.push(`Interrupted (${signal}): scenarios after the last completed repeat are missing.`);
      const partial = report();
      void cleanUp()
        .then(() => publish(partial))
        .finally(() => process.exit(130));
    });
  }

  if (queueOnly) notes.push('Only the merge queue was measured (--only queue).');
  try {
    if (!queueOnly) {
      log(
        `Temporal hand-off baseline: ${HANDOFF_STEPS} no-op steps in a row, ${HANDOFF_REPEATS} times, on this stack and on a dev server at Temporal's defaults…`,
      );
      const ours = await measureHandoffs(
        devServerTarget(stack.server, stack.client),
        'ours',
        HANDOFF_STEPS,
        HANDOFF_REPEATS,
      );
      log(`hand-off ${describeHandoffs(ours)}`);
      const serverDefault = await withHandoffServer('server-default', {}, (target) =>
        measureHandoffs(target, 'server-default', HANDOFF_STEPS, HANDOFF_REPEATS),
      );
      log(`hand-off ${describeHandoffs(serverDefault)}`);
      handoff = [...ours, ...serverDefault];
    }
    if (!o.skip.has('convoys') && !queueOnly) {
      for (const { n, width: requested } of o.scenarios) {
        // A width beyond N means every bead at once: the DAG has N chains of one bead.
        const width = Math.min(requested, n);
        const into: ConvoyScenarioReport = {
          n,
          width,
          driver: o.driver,
          repeats: [],
          failures: [],
          summary: summarizeConvoy([]),
        };
        convoys.push(into);
        await convoyScenario(stack, scratch, o, n, width, into);
      }
    }
    if (!o.skip.has('queue')) {
      // The same input (N MRs, the same bad ones) through each mode of the refinery.
      const modes: Pick<QueueScenarioReport, 'mode' | 'batchSize' | 'speculation'>[] = [
        { mode: 'one-at-a-time', batchSize: 1 },
        { mode: 'batching', batchSize: o.batchSize },
        { mode: 'speculative', batchSize: 1, speculation: o.speculation },
      ];
      for (const mode of modes) {
        const into: QueueScenarioReport = { ...mode, repeats: [], failures: [], summary: {} };
        mergeQueue.push(into);
        await queueScenario(stack, scratch, o, into);
      }
    }
  } finally {
    await cleanUp();
  }
  publish(report());
}

/** What every report starts with: when it ran, how long, on what, and how loaded the machine was at its end. */
function reportHeader(startedAt: Date, machine: BenchReport['machine']) {
  const finishedAt = new Date();
  return {
    bench: 'gastown-temporal' as const,
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    durationMs: finishedAt.getTime() - startedAt.getTime(),
    machine,
    loadAverageAtEnd: loadavg().map((l) => Math.round(l * 100) / 100),
  };
}

/** `--only cli`: the CLI start-up section alone, as a report of its own that leaves latest.md to full runs. */
async function cliStartupOnly(o: BenchOptions, startedAt: Date): Promise<void> {
  const machine = await machineInfo();
  log(`CLI start-up: ${o.cliRuns} runs of each command…`);
  const cliStartup: CliStartupFigures = await measureCliStartup(o.cliRuns);
  const report: BenchReport = {
    ...reportHeader(startedAt, machine),
    parameters: { only: o.only, cliRuns: o.cliRuns },
    cliStartup,
    convoys: [],
    mergeQueue: [],
    notes: ['Only the CLI start-up was measured (--only cli).'],
  };
  const paths = writeReport(o.out, report, { latest: false });
  console.log(renderMarkdown(report));
  log(`report: ${paths.md} (and ${paths.json})`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(`bench: ${(err as Error).stack ?? String(err)}`);
    process.exit(1);
  },
);
