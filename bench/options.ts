/** `npm run bench` flags, validated: a bad flag is a one-line error before anything starts. */
import { Command, CommanderError } from 'commander';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { describeZodError } from '../domain/validation';

/** Convoy scenarios as `NxW` pairs: N beads in W independent chains (W = 1 is one chain, every hop on the critical path). */
const Scenarios = z
  .string()
  .regex(/^\d+x\d+(,\d+x\d+)*$/, 'expected NxW pairs (beads x DAG width), e.g. 10x1,100x16')
  .transform((s) => s.split(',').map((p) => p.split('x').map(Number) as [number, number]))
  .pipe(
    z
      .array(z.tuple([z.number().int().min(1).max(1000), z.number().int().min(1).max(64)]))
      .transform((pairs) => pairs.map(([n, width]) => ({ n, width }))),
  );

/** `3` (every N) or `10=3,100=2,300=1` (per N; an N not listed runs once). */
const Repeats = z
  .string()
  .regex(/^(\d+|\d+=\d+(,\d+=\d+)*)$/, 'expected a number, or N=repeats pairs such as 10=3,100=2,300=1')
  .transform((s) =>
    s.includes('=')
      ? Object.fromEntries(s.split(',').map((p) => p.split('=').map(Number) as [number, number]))
      : { default: Number(s) },
  )
  .refine((r) => Object.values(r).every((v) => v >= 1 && v <= 20), 'repeats must be between 1 and 20');

export const BenchOptions = z.object({
  scenarios: Scenarios,
  repeats: Repeats,
  driver: z.enum(['convoy', 'sling']),
  queueMrs: z.coerce.number().int().min(2).max(200),
  queueBad: z.coerce.number().min(0).max(0.5),
  queueRepeats: z.coerce.number().int().min(1).max(10),
  gateSeconds: z.coerce.number().min(0).max(60),
  batchSize: z.coerce.number().int().min(2).max(32),
  /** The convoys' rig `batchSize`; unset: the product default (DEFAULT_BATCH_SIZE). `1` compares one at a time. */
  convoyBatchSize: z.coerce.number().int().min(1).max(32).optional(),
  /** The speculative mode's `speculation`: candidates gated at once at most. */
  speculation: z.coerce.number().int().min(2).max(16),
  skip: z
    .string()
    .regex(/^((convoys|queue)(,(convoys|queue))*)?$/, 'expected convoys and/or queue')
    .transform((s) => new Set(s.split(',').filter(Boolean))),
  out: z.string().min(1),
  keepScratch: z.boolean(),
  quick: z.boolean(),
  full: z.boolean(),
  /**
   * `cli`: measure only the CLI start-up (no Temporal stack); `queue`: only the merge queue's modes (no start-up,
   * hand-off baseline or convoys). Either report leaves latest.md to full runs.
   */
  only: z.enum(['cli', 'queue']).optional(),
  cliRuns: z.coerce.number().int().min(1).max(200),
  /** Re-render the Markdown of an earlier JSON report instead of measuring. */
  render: z.string().endsWith('.json', 'expected a JSON report, e.g. bench/reports/<time>.json').optional(),
});
export type BenchOptions = z.output<typeof BenchOptions>;

/**
 * The default run takes about eight minutes on a 2-core machine, every convoy figure a median of 3 repeats: a 10-bead
 * chain, 10 beads at once, 100 beads 16 wide; the merge queue once per mode (its gate runs are the same every time,
 * its drain is mostly the slow gate). Scale (300 beads), long chains (N serial hops each) and queue repeats: `--full`.
 */
const DEFAULTS = {
  scenarios: '10x1,10x16,100x16',
  repeats: '3',
  driver: 'convoy',
  queueMrs: '20',
  queueBad: '0.05',
  queueRepeats: '1',
  gateSeconds: '2',
  batchSize: '8',
  speculation: '8',
  skip: '',
  cliRuns: '15',
  out: fileURLToPath(new URL('./reports', import.meta.url)),
};

/** Tiny parameters for trying the bench out while others use the machine. */
const QUICK = {
  scenarios: '6x1,6x3',
  repeats: '1',
  queueMrs: '8',
  gateSeconds: '1',
  batchSize: '4',
  speculation: '4',
};
/** Every N at both widths, every figure a median of 3 (estimated at an hour here: the 300-bead chain alone is 300 serial hops). */
const FULL = { scenarios: '10x1,10x16,100x1,100x16,300x1,300x16', repeats: '3', queueRepeats: '3' };

export function repeatsFor(options: BenchOptions, n: number): number {
  return options.repeats[n] ?? options.repeats.default ?? 1;
}

export function parseOptions(argv: string[]): BenchOptions {
  const program = new Command('npm run bench --')
    .description(
      'Measures what orchestration costs next to the same git work done by a plain script; writes bench/reports/<time>.{json,md} and latest.md.',
    )
    .option(
      '--quick',
      `tiny parameters for a try-out (${Object.entries(QUICK)
        .map(([k, v]) => `${k}=${v}`)
        .join(', ')}); other flags still override`,
      false,
    )
    .option(
      '--full',
      `the whole matrix with 3 repeats each (${Object.entries(FULL)
        .map(([k, v]) => `${k}=${v}`)
        .join(', ')}); other flags still override`,
      false,
    )
    .option(
      '--scenarios <list>',
      `convoys to run as NxW pairs: N beads in W independent chains (default ${DEFAULTS.scenarios})`,
    )
    .option('--repeats <spec>', `repeats per N: a number, or N=repeats pairs (default ${DEFAULTS.repeats})`)
    .option(
      '--driver <driver>',
      'convoy: real convoys; sling: beads slung one by one as their dependency merges',
      DEFAULTS.driver,
    )
    .option('--queue-mrs <n>', `merge requests in the merge-queue bench (default ${DEFAULTS.queueMrs})`)
    .option('--queue-bad <rate>', 'share of merge requests whose change fails the gate', DEFAULTS.queueBad)
    .option('--queue-repeats <n>', `repeats of each merge-queue mode (default ${DEFAULTS.queueRepeats})`)
    .option('--gate-seconds <s>', `duration of the merge-queue bench's slow gate (default ${DEFAULTS.gateSeconds})`)
    .option('--batch-size <n>', `refinery batch size for the batching mode (default ${DEFAULTS.batchSize})`)
    .option(
      '--convoy-batch-size <n>',
      "the convoys' rig batch size (default: the product's, 8; 1: one at a time, as reports up to 2026-11-30T13:00)",
    )
    .option('--speculation <n>', `candidates gated at once in the speculative mode (default ${DEFAULTS.speculation})`)
    .option('--skip <parts>', 'leave out parts: convoys, queue', DEFAULTS.skip)
    .option(
      '--only <part>',
      'measure only this part: cli (the CLI start-up, a few seconds, no Temporal stack) or queue (the merge queue modes)',
    )
    .option('--cli-runs <n>', `runs of each command in the CLI start-up (default ${DEFAULTS.cliRuns})`)
    .option('--out <dir>', 'where reports are written', DEFAULTS.out)
    .option('--keep-scratch', 'keep the scratch repositories and GT_HOME for inspection', false)
    .option('--render <report.json>', 'measure nothing: write the Markdown summary of an earlier JSON report again')
    .exitOverride();
  try {
    program.parse(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) process.exit(err.exitCode);
    throw err;
  }
  const o = program.opts<Record<string, string | boolean | undefined>>();
  if (o.quick && o.full) {
    console.error('bench: --quick and --full exclude each other (see npm run bench -- --help)');
    process.exit(1);
  }
  const preset: Record<string, string> = o.quick ? QUICK : o.full ? FULL : {};
  const pick = (k: keyof typeof DEFAULTS) => (o[k] as string | undefined) ?? preset[k] ?? DEFAULTS[k];
  const parsed = BenchOptions.safeParse({
    scenarios: pick('scenarios'),
    repeats: pick('repeats'),
    driver: pick('driver'),
    queueMrs: pick('queueMrs'),
    queueBad: pick('queueBad'),
    queueRepeats: pick('queueRepeats'),
    gateSeconds: pick('gateSeconds'),
    batchSize: pick('batchSize'),
    convoyBatchSize: o.convoyBatchSize as string | undefined,
    speculation: pick('speculation'),
    skip: pick('skip'),
    only: o.only as string | undefined,
    cliRuns: pick('cliRuns'),
    out: pick('out'),
    keepScratch: o.keepScratch === true,
    quick: o.quick === true,
    full: o.full === true,
    render: o.render as string | undefined,
  });
  if (!parsed.success) {
    console.error(`bench: invalid options: ${describeZodError(parsed.error)} (see npm run bench -- --help)`);
    process.exit(1);
  }
  return parsed.data;
}
