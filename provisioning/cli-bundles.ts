/**
 * The `gt` bundles: plain JavaScript that bare node runs without the TypeScript loader, so a command starts in node's
 * own time plus what that command imports. bin/gt runs a bundle only while it is newer than every source under its
 * source directories (BUNDLED_SOURCE_DIRS here and `sources` in bin/gt; a test checks both against esbuild's inputs);
 * otherwise operator commands rebuild (scripts/build-cli.ts) and agent commands run the sources.
 *
 * - dist/gt-agent.cjs: the agent commands (client/agent-cli.ts), one self-contained CommonJS file for node18: the agent
 *   image's node runs it inside docker runs, where the installation is mounted read-only and nothing may be rebuilt.
 *   CommonJS because node starts a script faster than an ES module: every agent's `gt done` is on its bead's path
 *   (docs/performance.md, the nineteenth pass).
 * - dist/gt-cli/cli.mjs: every command (client/cli.ts) as ES modules split per command group, so a command loads only
 *   its group's code (and a group what a command runs only when it runs: test/cli-bundle.test.ts). The packages most
 *   commands load (BUNDLED_PACKAGES) are in it, with everything they import; the others stay in node_modules.
 *
 * Both bundles hold packages, so an install makes them stale too: bin/gt also compares them with
 * node_modules/.package-lock.json, which every `npm ci` / `npm install` rewrites.
 *
 * Invariants, for several gt processes starting at once on a stale bundle: a reader never sees a half-written bundle —
 * each build goes to a private temporary path and is published by one rename (the agent file; the symlink dist/gt-cli
 * to a build directory), so the last rename wins and every published build is complete. A bundle's mtime is the time
 * its build *started*, so a source saved during a build leaves it stale. A build directory is removed only
 * RETIRED_BUILD_MS after it stopped being the published one (not after it was built): a process that resolved the
 * symlink just before a new build replaced it still imports its chunks from the old directory.
 */
import { build, type BuildOptions, type Plugin } from 'esbuild';
import { randomBytes } from 'node:crypto';
import {
  mkdirSync,
  readdirSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const dist = join(root, 'dist');
const agentCliBundlePath = join(dist, 'gt-agent.cjs');
const cliBundlePath = join(dist, 'gt-cli', 'cli.mjs');
/** Where the sources of both bundles live (bin/gt's staleness check looks at their *.ts files). */
export const BUNDLED_SOURCE_DIRS = [
  'client',
  'agents',
  'domain',
  'activities',
  'worker',
  'workflows',
  'codec',
  'host',
  'gateway',
  'provisioning',
];
/**
 * Build directories other than the published one are removed this long after they were retired (replaced as the
 * published one). A process started from a retired build has loaded its chunks by then: command groups are imported at
 * start-up, with-town's modules as the command starts.
 */
export const RETIRED_BUILD_MS = 10 * 60_000;
/** The file in a build directory whose mtime says when the directory stopped being the published build. */
const RETIRED_MARK = '.retired';

/**
 * The packages our sources import that the operator bundle carries, with everything they import: what a command that
 * talks to the town loads. Node resolves and wraps a package's CommonJS files one by one, and lexes each one an ES
 * module imports for its exports: for the Temporal client (gRPC, protobufjs and its 1.4 MB of descriptors) that was
 * ≈ 0.3 s of `gt rig list`'s 1.05 s here (docs/performance.md). The others stay in node_modules: those that read their
 * own files (__dirname), native ones, and those only `up` and `worker` load (bin/gt runs those from the sources, so
 * no bundled copy of a Temporal package ever meets the worker's).
 */
export const BUNDLED_PACKAGES = [
  'zod',
  'commander',
  'yaml',
  'smol-toml',
  '@temporalio/client',
  '@temporalio/common',
  '@temporalio/envconfig',
  '@temporalio/proto',
  '@temporalio/workflow',
];

/** Leaves every package our sources import in node_modules unless it is listed; what a listed one imports is bundled. */
function bundleOnly(packages: readonly string[]): Plugin {
  return {
    name: 'bundle-only',
    setup(b) {
      b.onResolve({ filter: /^[^./]/ }, (args) => {
        if (args.importer.includes('/node_modules/')) return undefined;
        const name = args.path
          .split('/')
          .slice(0, args.path.startsWith('@') ? 2 : 1)
          .join('/');
        return packages.includes(name) ? undefined : { path: args.path, external: true };
      });
    },
  };
}

// node18: the agent image's node (Debian bookworm) runs the agent bundle inside docker runs, and agents' MCP clients
// start `gt mcp` from the operator bundle there.
const common: BuildOptions = { bundle: true, platform: 'node', target: 'node18', logLevel: 'warning' };
const unique = () => `${Date.now().toString(36)}-${process.pid}-${randomBytes(3).toString('hex')}`;

async function buildAgentCli(): Promise<string> {
  const started = new Date();
  mkdirSync(dist, { recursive: true });
  const temporary = join(dist, `.gt-agent-${unique()}.cjs`);
  try {
    await build({ ...common, format: 'cjs', entryPoints: [join(root, 'client/agent-cli.ts')], outfile: temporary });
    utimesSync(temporary, started, started);
    renameSync(temporary, agentCliBundlePath);
  } finally {
    rmSync(temporary, { force: true });
  }
  return agentCliBundlePath;
}

async function buildOperatorCli(): Promise<string> {
  const started = new Date();
  mkdirSync(dist, { recursive: true });
  const name = `gt-cli-${unique()}`;
  const outdir = join(dist, name);
  const link = join(dist, `.gt-cli-link-${unique()}`);
  try {
    await build({
      ...common,
      // ES modules, which esbuild splits per command group.
      format: 'esm',
      // Bundled CommonJS packages require() node's built-ins, which an ES module has no require for.
      banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" },
      entryPoints: { cli: join(root, 'client/cli.ts') },
      outdir,
      outExtension: { '.js': '.mjs' },
      splitting: true,
      chunkNames: 'chunks/[name]-[hash]',
      plugins: [bundleOnly(BUNDLED_PACKAGES)],
    });
    utimesSync(join(outdir, 'cli.mjs'), started, started);
    // A symlink replaced by rename(2) is atomic; a directory cannot replace a non-empty one.
    symlinkSync(name, link);
    renameSync(link, join(dist, 'gt-cli'));
  } catch (err) {
    rmSync(outdir, { recursive: true, force: true });
    throw err;
  } finally {
    rmSync(link, { force: true });
  }
  removeRetiredBuilds(dist, name);
  return cliBundlePath;
}

/**
 * Marks every build directory in `dir` but `keep` (the one just published) and the one published now (a concurrent
 * build may have replaced `keep` already) as retired, the first time it is seen so, and removes those retired more
 * than RETIRED_BUILD_MS ago.
 */
export function removeRetiredBuilds(dir: string, keep: string, now = Date.now()): void {
  const published = readlinkSync(join(dir, 'gt-cli'));
  for (const entry of readdirSync(dir)) {
    if (!entry.startsWith('gt-cli-') || entry === keep || entry === published) continue;
    const mark = join(dir, entry, RETIRED_MARK);
    try {
      const retired = statSync(mark, { throwIfNoEntry: false });
      if (!retired) writeFileSync(mark, '');
      else if (now - retired.mtimeMs > RETIRED_BUILD_MS) rmSync(join(dir, entry), { recursive: true, force: true });
    } catch {
      // Removed by a concurrent build.
    }
  }
}

/** Both bundles (`npm run build:cli`, and bin/gt when the operator bundle is stale). */
export async function buildCliBundles(): Promise<string[]> {
  return Promise.all([buildAgentCli(), buildOperatorCli()]);
}
