/**
 * `npm run soak [-- --stack prod|dev --beads 200 --hosts 2 --faults kill-host,restart-postgres,... --seed 1 --full]`:
 * the chaos soak (soak.ts) on the production topology (PostgreSQL + the full Temporal server, the default) or on the
 * embedded dev server, its invariants checked (invariants.ts), a Markdown + JSON report under
 * bench/reports/soak/<time>.* (apart from the bench's reports, whose tooling reads every JSON in bench/reports).
 * Exits 1 when any invariant is violated or a component exited that no fault asked to; 2 on bad options.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { z } from 'zod';
import { describeZodError } from '../../domain/validation';
import { renderSoakReport } from './report';
import { FAULT_KINDS, faultKindsOf, faultsProblem, runSoak } from './soak';
import { STACK_KINDS } from './stack';

const SoakCliOptions = z.object({
  stack: z.enum(STACK_KINDS),
  beads: z.coerce.number().int().min(2).max(2000),
  width: z.coerce.number().int().min(1).max(200),
  hosts: z.coerce.number().int().min(2).max(8),
  maxPolecats: z.coerce.number().int().min(1).max(64),
  faults: z
    .string()
    .transform((s) => s.split(',').filter(Boolean))
    .pipe(z.array(z.enum(FAULT_KINDS))),
  faultEvery: z
    .string()
    .regex(/^\d+(\.\d+)?-\d+(\.\d+)?$/, 'expected MIN-MAX seconds, e.g. 10-30')
    .transform((s) => s.split('-').map(Number) as [number, number])
    .refine(([lo, hi]) => lo > 0 && lo <= hi, 'MIN must be above 0 and at most MAX'),
  faultOrder: z.enum(['random', 'cycle']),
  downFor: z
    .string()
    .regex(/^\d+(\.\d+)?-\d+(\.\d+)?$/, 'expected MIN-MAX seconds, e.g. 1-4')
    .transform((s) => s.split('-').map(Number) as [number, number])
    .refine(([lo, hi]) => lo <= hi, 'MIN must be at most MAX'),
  flakyPercent: z.coerce.number().min(0).max(50),
  seed: z.coerce.number().int().min(0),
  deadlineMinutes: z.coerce.number().min(1).max(600),
  out: z.string().min(1),
  full: z.boolean(),
});

const reportsDir = fileURLToPath(new URL('../reports/soak', import.meta.url));

const program = new Command('soak')
  .description('chaos soak: a convoy on several worker hosts under injected faults, then the invariants checked')
  .option('--stack <kind>', 'prod (PostgreSQL + the full Temporal server) | dev (the embedded dev server)', 'prod')
  .option('--beads <n>', 'beads in the convoy (default 200; 1000 with --full)')
  .option('--width <n>', 'independent chains the beads form', '20')
  .option('--hosts <n>', 'worker hosts (separate GT_HOMEs)', '2')
  .option('--max-polecats <n>', 'concurrent agents on the rig', '8')
  .option('--faults <kinds>', `comma-separated, from ${FAULT_KINDS.join(', ')} (default: every kind the stack takes)`)
  .option('--fault-every <min-max>', 'seconds between faults', '10-30')
  .option(
    '--fault-order <order>',
    'random (rounds of every kind, each round in a seeded order) | cycle (each fault once, in order, the last bead held until the last has fallen)',
    'random',
  )
  .option('--down-for <min-max>', 'seconds a killed server or PostgreSQL stays down before its restart', '1-4')
  .option('--flaky-percent <p>', 'share of good trees the gate fails anyway', '5')
  .option('--seed <n>', 'seed of the bead kinds and the fault schedule', '1')
  .option('--deadline-minutes <m>', 'stop waiting for the convoy after this long (default 60; 240 with --full)')
  .option('--out <dir>', 'where the report goes', reportsDir)
  .option('--full', 'the long run: 1,000 beads', false)
  .exitOverride();

try {
  program.parse();
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode);
  throw err;
}
const raw = program.opts<Record<string, unknown>>();
const parsed = SoakCliOptions.safeParse({
  ...raw,
  beads: raw.beads ?? (raw.full ? 1000 : 200),
  faults: raw.faults ?? (STACK_KINDS.includes(raw.stack as never) ? faultKindsOf(raw.stack as 'prod').join(',') : ''),
  deadlineMinutes: raw.deadlineMinutes ?? (raw.full ? 240 : 60),
});
if (!parsed.success) {
  console.error(`soak: ${describeZodError(parsed.error)}`);
  process.exit(2);
}
const o = parsed.data;
const problem = faultsProblem(o.stack, o.faults);
if (problem) {
  console.error(`soak: ${problem}`);
  process.exit(2);
}
const t0 = Date.now();
const log = (line: string) => console.log(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(5)} s] ${line}`);
const result = await runSoak({ ...o, deadlineMs: o.deadlineMinutes * 60_000, log });
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
mkdirSync(o.out, { recursive: true });
const md = join(o.out, `${stamp}.md`);
writeFileSync(join(o.out, `${stamp}.json`), `${JSON.stringify(result, null, 2)}\n`);
writeFileSync(md, renderSoakReport(result));
console.log(`\n${renderSoakReport(result)}\nreport: ${md}`);
process.exit(result.violations || result.unexpectedExits?.length ? 1 : 0);
