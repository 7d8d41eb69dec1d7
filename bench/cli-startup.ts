/**
 * CLI start-up: the wall time from spawning a `gt` command to its exit, for commands that do nothing but start
 * (`--version`, `--help`), next to bare `node -e 0` and to a command run from the TypeScript sources (what bin/gt
 * falls back to while a bundle is stale or cannot be built), and one real read, `gt rig list --json`, from an empty
 * in-memory dev server started for it (the client's modules, the connection and one visibility list). A step of every
 * bench run, and alone with `npm run bench -- --only cli` (no worker, seconds). The commands take turns, run after
 * run, so load that comes and goes during the measurement affects all of them alike; the figure is the median of the
 * runs.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startDevServer } from '../provisioning/dev-server';
import { percentile } from './stats';

const root = fileURLToPath(new URL('..', import.meta.url));
const gt = `${root}bin/gt`;

/**
 * Node reads the file NODE_EXTRA_CA_CERTS names, whole, at every start, before any code runs: with Debian's bundle of
 * ≈ 140 certificates that is ≈ 80 ms of a 120 ms `node -e 0` on the 2-core machine of bench/README.md, the same for
 * every command. The commands are timed without it (the yardstick is bare node), and `node -e 0` once more with it
 * when this machine sets it, so the report shows what it adds here.
 */
const EXTRA_CA_CERTS = process.env.NODE_EXTRA_CA_CERTS;

/** What is measured, in the order of the report's table; `node -e 0` is the yardstick. */
const COMMANDS: { label: string; how?: string; file: string; args: string[]; town?: true; caCerts?: true }[] = [
  { label: 'node -e 0', file: 'node', args: ['-e', '0'] },
  ...(EXTRA_CA_CERTS
    ? [
        {
          label: 'node -e 0',
          how: 'with NODE_EXTRA_CA_CERTS, as set here',
          file: 'node',
          args: ['-e', '0'],
          caCerts: true as const,
        },
      ]
    : []),
  { label: 'gt --version', how: 'dist/gt-cli', file: gt, args: ['--version'] },
  { label: 'gt rig list --help', how: 'dist/gt-cli', file: gt, args: ['rig', 'list', '--help'] },
  { label: 'gt done --help', how: 'dist/gt-agent.cjs', file: gt, args: ['done', '--help'] },
  {
    label: 'gt rig list --help',
    how: 'sources (tsx)',
    file: 'node',
    args: ['--import', `${root}node_modules/tsx/dist/loader.mjs`, `${root}client/cli.ts`, 'rig', 'list', '--help'],
  },
  {
    label: 'gt rig list --json',
    how: 'dist/gt-cli, a read from a town',
    file: gt,
    args: ['rig', 'list', '--json'],
    town: true,
  },
];

export interface CliStartupFigures {
  runs: number;
  commands: { label: string; how?: string; medianMs: number; minMs: number; maxMs: number; timesNode: number }[];
}

function timeOnce(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    execFile(file, args, { env }, (err) =>
      err
        ? reject(new Error(`${file} ${args.join(' ')}: ${err.message}`))
        : resolve(Number(process.hrtime.bigint() - started) / 1e6),
    );
  });
}

export async function measureCliStartup(runs: number): Promise<CliStartupFigures> {
  const server = await startDevServer({ namespace: 'default' });
  const home = mkdtempSync(join(tmpdir(), 'gt-bench-cli-'));
  const { NODE_EXTRA_CA_CERTS: _, ...bare } = process.env;
  const env = { ...bare, GT_DEBUG: '', GT_HOME: home };
  const town = { ...env, TEMPORAL_ADDRESS: server.address, TEMPORAL_NAMESPACE: server.namespace };
  const envOf = (c: (typeof COMMANDS)[number]) =>
    c.caCerts ? { ...env, NODE_EXTRA_CA_CERTS: EXTRA_CA_CERTS } : c.town ? town : env;
  const samples = COMMANDS.map(() => [] as number[]);
  try {
    // Unmeasured: makes the bundles current (bin/gt rebuilds a stale one) and warms the file cache.
    for (const c of COMMANDS) await timeOnce(c.file, c.args, envOf(c));
    for (let r = 0; r < runs; r++) {
      for (const [i, c] of COMMANDS.entries()) samples[i]!.push(await timeOnce(c.file, c.args, envOf(c)));
    }
  } finally {
    await server.stop();
    rmSync(home, { recursive: true, force: true });
  }
  const medians = samples.map((s) => percentile(s, 50)!);
  return {
    runs,
    commands: COMMANDS.map((c, i) => ({
      label: c.label,
      how: c.how,
      medianMs: Math.round(medians[i]!),
      minMs: Math.round(Math.min(...samples[i]!)),
      maxMs: Math.round(Math.max(...samples[i]!)),
      timesNode: Math.round((medians[i]! / medians[0]!) * 10) / 10,
    })),
  };
}

export function renderCliStartup(f: CliStartupFigures): string[] {
  return [
    `## CLI start-up (spawn → exit, median of ${f.runs} runs, commands taking turns)`,
    '',
    '| command | from | median | min–max | × `node -e 0` |',
    '|---|---|---|---|---|',
    ...f.commands.map(
      (c) =>
        `| \`${c.label}\` | ${c.how ?? ''} | ${c.medianMs} ms | ${c.minMs}–${c.maxMs} ms | ${c.timesNode.toFixed(1)}× |`,
    ),
    '',
  ];
}
