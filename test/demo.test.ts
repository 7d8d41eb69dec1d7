/**
 * Issue 12: `npm run demo`, exactly as the README's first command runs it — its own Temporal dev server (with Web UI),
 * worker and gateway, a fresh GT_HOME and scratch repository, three beads worked by the bundled `gt-example-agent`.
 * The test reads the outcome from the demo's own GT_HOME afterwards (the repository's main, the agent's files, the
 * dev server's database) rather than trusting what the demo prints, and checks the demo leaves no server behind.
 *
 * Cost: the demo starts a second dev server and bundles the workflows itself; about 25 s on 2 cores (measured
 * 2026-11-29: 22.7 s standalone, of which 7 s are the worker's bundling).
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from './helpers/town';

const run = promisify(execFile);
const git = async (gitDir: string, args: string[]) =>
  (await run('git', ['--git-dir', gitDir, ...args], { encoding: 'utf8' })).stdout;

/** Runs `npm run demo` to its end; its output is stdout and stderr interleaved, as a user sees it. */
function runDemo(env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn('npm', ['run', '--silent', 'demo'], { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    proc.stdout.on('data', (d: Buffer) => (output += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (output += d.toString()));
    proc.once('error', reject);
    proc.once('exit', (code) => resolve({ code, output }));
  });
}

/** Live processes whose command line mentions `text` (the demo's server names its database in GT_HOME). */
function processesMentioning(text: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (cmdline.includes(text)) found.push(`${pid}: ${cmdline}`);
    } catch {
      // The process ended while we looked.
    }
  }
  return found;
}

let home: string | undefined;
afterAll(() => {
  if (home) rmSync(home, { recursive: true, force: true });
});

describe('npm run demo', () => {
  it(
    'merges three beads worked by gt-example-agent on a fresh GT_HOME and stops its own server',
    { timeout: 240_000 },
    async () => {
      // Nothing of the suite's town may leak into the demo: it must find or start everything itself.
      const env = { ...process.env };
      for (const k of Object.keys(env)) if (k.startsWith('TEMPORAL_') || k.startsWith('GT_')) delete env[k];

      const { code, output } = await runDemo(env);
      home = /GT_HOME=(\S+)/.exec(output)?.[1];
      expect(code, output).toBe(0);
      expect(output).toContain('all three beads merged.');
      expect(home, output).toBeDefined();
      // Its server kept its state in the fresh GT_HOME, not in the user's ~/.gastown.
      expect(existsSync(join(home!, 'temporal.db'))).toBe(true);

      const repo = join(home!, 'webapp.git');
      const titles = {
        'demo-1': 'Add the login endpoint',
        'demo-2': 'Add the login form',
        'demo-3': 'Document the login flow',
      };
      // main: per bead, the agent's commit merged by the refinery (default strategy: merge commits naming their MRs),
      // one merge each or one for MRs that waited together (a batch, when the machine is busy).
      const landed = (await git(repo, ['log', '--format=%(trailers:key=Gt-Merge-Request,valueonly)', 'main']))
        .split('\n')
        .filter(Boolean)
        .map((trailer) => trailer.split('@')[0]);
      expect(landed.sort()).toEqual(Object.keys(titles).map((id) => `mr:${id}:1`));
      for (const [id, title] of Object.entries(titles)) {
        // What gt-example-agent writes: the bead's title from its prompt, and the run that wrote it.
        expect(await git(repo, ['show', `main:beads/${id}.md`])).toBe(`${title}\n\nImplemented by run ${id}/r1/a1.\n`);
        const agentCommit = await git(repo, [
          'log',
          '--no-merges',
          '--format=%s%n%b%n%an <%ae>',
          `--grep=Bead: ${id}$`,
          'main',
        ]);
        expect(agentCommit).toContain(title);
        expect(agentCommit).toContain(`Run: ${id}/r1/a1`);
        // The rig sets no identity: the run's default one (docs/agents.md) reaches the agent's commit.
        expect(agentCommit).toContain('Gas Town polecat <polecat@gastown.local>');
      }
      // The demo printed the merged main and the bead workflows as Temporal lists them by search attributes.
      for (const id of Object.keys(titles)) expect(output).toContain(`bead:${id} [GtStatus=closed]`);
      const mainSha = (await git(repo, ['rev-parse', 'main'])).trim();
      expect(output).toContain(mainSha.slice(0, 7));

      // It stopped the dev server it started (and every agent run): nothing it ran outlives it.
      expect(output).toMatch(/Web UI at http:\/\/127\.0\.0\.1:\d+/);
      expect(processesMentioning(home!)).toEqual([]);
    },
  );
});
