/**
 * The full Temporal server (the production topology's, not the CLI's embedded dev server) and its Web UI server,
 * found or built once into a cache, like the CLI (provisioning/temporal-cli.ts). In this order:
 *   1. GT_TEMPORAL_SERVER_DIR: a directory laid out like the cache (below), e.g. the official release archive
 *      `temporal_<version>_linux_amd64.tar.gz` unpacked, plus the `schema/` folder of the same release's sources;
 *   2. the cached build under the user's cache dir;
 *   3. a Go build from the Go module proxy, when Go is present (`npm run provision`);
 *   4. nothing: `available: false` with the reason (the production-topology tests then fail or are opted out).
 *
 * Cache layout (one directory per server version, published by one rename, so a reader never sees half of it):
 *   temporal-server        go.temporal.io/server/cmd/server     (the multi-service server: frontend, history, …)
 *   temporal-sql-tool      go.temporal.io/server/cmd/tools/sql  (creates and migrates the SQL schemas)
 *   config/docker.yaml     the module's config template: the same file, read through the same environment variables
 *                          (DB, POSTGRES_SEEDS, DYNAMIC_CONFIG_FILE_PATH, …), as the temporalio/server image uses
 *   schema/postgresql/     the module's SQL schemas (what temporalio/admin-tools ships under /etc/temporal/schema)
 *   ui/ui-server           github.com/temporalio/ui-server/v2/cmd/server (the UI the CLI embeds; optional)
 *   ui/config/docker.yaml  its config template, read through TEMPORAL_ADDRESS, TEMPORAL_UI_PORT, … as in temporalio/ui
 *
 * The build runs in the module graph of the Temporal CLI v1.5.1 (a scratch module whose go.mod and go.sum are the
 * CLI's): the CLI requires exactly go.temporal.io/server v1.29.1 and ui-server v2.42.1 and embeds both, so on a
 * machine that built the CLI (provisioning does it first) nearly every package is already in Go's build cache and
 * the two builds take ≈ 20 s instead of ≈ 7 CPU-minutes. The dependency versions are the CLI's: the release's but
 * for patch bumps (pgx 5.7.4 for 5.7.2, the internal worker's SDK 1.37 for 1.35). CGO_ENABLED=0 as in the release;
 * `-ldflags=-s -w` drops debug tables nobody reads here. The release's `disable_grpc_modules` tag would trim gRPC's
 * xDS stack but change the cache keys of every package above Google Cloud Storage, so it is not used. Figures:
 * docs/deployment.md.
 */
import { execFile, spawn } from 'node:child_process';
import {
  accessSync,
  chmodSync,
  constants,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { z } from 'zod';
import { findOnPath, TEMPORAL_CLI_VERSION } from './temporal-cli';

const run = promisify(execFile);

export const TEMPORAL_SERVER_MODULE = 'go.temporal.io/server';
/** The server the CLI's dev server embeds (CLI v1.5.1), so both tiers of tests run the same server code. */
export const TEMPORAL_SERVER_VERSION = 'v1.29.1';
export const UI_SERVER_MODULE = 'github.com/temporalio/ui-server/v2';
/** The UI server the CLI v1.5.1 embeds: its module (with the built UI assets) is already in a machine's module cache. */
export const UI_SERVER_VERSION = 'v2.42.1';
export const GO_BUILD_FLAGS = ['-ldflags=-s -w'];
/** The module whose dependency graph the build uses (see the header). */
export const BUILD_GRAPH_MODULE = 'github.com/temporalio/cli';

export type ServerSource = 'GT_TEMPORAL_SERVER_DIR' | 'cache' | 'go-build';
export type ResolvedTemporalServer =
  | {
      available: true;
      source: ServerSource;
      dir: string;
      server: string;
      sqlTool: string;
      /** The directory holding `docker.yaml` (the server's --config). */
      configDir: string;
      /** `schema/postgresql` of the release: `v12/temporal/versioned`, `v12/visibility/versioned`. */
      postgresSchemaDir: string;
      ui: { available: true; server: string; configDir: string } | { available: false; reason: string };
    }
  | { available: false; reason: string };

export function temporalServerCacheDir(): string {
  const base = process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache');
  return join(base, 'gastown', `temporal-server-${TEMPORAL_SERVER_VERSION}`);
}

const isExecutable = (p: string) => {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
};

export const TEMPORAL_SERVER_HELP = [
  `No Temporal server ${TEMPORAL_SERVER_VERSION} could be found or built. Any one of these fixes it:`,
  `  - install Go and run \`npm run provision\` (builds ${TEMPORAL_SERVER_MODULE}/cmd/server and cmd/tools/sql@${TEMPORAL_SERVER_VERSION}`,
  `    from the Go module proxy into ${temporalServerCacheDir()}; a few minutes, once);`,
  '  - set GT_TEMPORAL_SERVER_DIR to a directory holding temporal-server, temporal-sql-tool, config/docker.yaml and',
  `    schema/postgresql, e.g. the release archive temporal_${TEMPORAL_SERVER_VERSION.slice(1)}_linux_amd64.tar.gz of`,
  '    github.com/temporalio/temporal unpacked, with the schema/ folder of the same release added (docs/deployment.md).',
].join('\n');

/** What a directory must hold to serve as the server's installation. */
function layout(dir: string) {
  return {
    server: join(dir, 'temporal-server'),
    sqlTool: join(dir, 'temporal-sql-tool'),
    configDir: join(dir, 'config'),
    postgresSchemaDir: join(dir, 'schema', 'postgresql'),
    uiServer: join(dir, 'ui', 'ui-server'),
    uiConfigDir: join(dir, 'ui', 'config'),
  };
}

/** The installation in `dir`, or why it is not one. */
function inspect(dir: string, source: ServerSource): ResolvedTemporalServer {
  const l = layout(dir);
  const missing = [
    isExecutable(l.server) ? undefined : 'temporal-server',
    isExecutable(l.sqlTool) ? undefined : 'temporal-sql-tool',
    existsSync(join(l.configDir, 'docker.yaml')) ? undefined : 'config/docker.yaml',
    existsSync(join(l.postgresSchemaDir, 'v12', 'temporal', 'versioned')) ? undefined : 'schema/postgresql/v12',
  ].filter(Boolean);
  if (missing.length) return { available: false, reason: `${dir} lacks ${missing.join(', ')}` };
  const ui =
    isExecutable(l.uiServer) && existsSync(join(l.uiConfigDir, 'docker.yaml'))
      ? { available: true as const, server: l.uiServer, configDir: l.uiConfigDir }
      : { available: false as const, reason: `no Web UI server in ${join(dir, 'ui')}` };
  return {
    available: true,
    source,
    dir,
    server: l.server,
    sqlTool: l.sqlTool,
    configDir: l.configDir,
    postgresSchemaDir: l.postgresSchemaDir,
    ui,
  };
}

export interface ResolveServerOptions {
  /** Allow building with Go (minutes, once). */
  build?: boolean;
  onProgress?: (message: string) => void;
}

export const findGo = () =>
  findOnPath('go') ?? (existsSync('/usr/local/go/bin/go') ? '/usr/local/go/bin/go' : undefined);

export async function resolveTemporalServer(options: ResolveServerOptions = {}): Promise<ResolvedTemporalServer> {
  const fromEnv = process.env.GT_TEMPORAL_SERVER_DIR;
  if (fromEnv) {
    const found = inspect(fromEnv, 'GT_TEMPORAL_SERVER_DIR');
    if (!found.available)
      throw new Error(
        `GT_TEMPORAL_SERVER_DIR=${fromEnv} is not a server installation: ${found.reason}.\n${TEMPORAL_SERVER_HELP}`,
      );
    return found;
  }
  const dir = temporalServerCacheDir();
  const cached = inspect(dir, 'cache');
  if (cached.available) return cached;
  const go = findGo();
  if (!go) return { available: false, reason: `Go is not installed.\n${TEMPORAL_SERVER_HELP}` };
  if (options.build === false) return { available: false, reason: `not built yet.\n${TEMPORAL_SERVER_HELP}` };
  await buildWithGo(go, dir, options.onProgress);
  const built = inspect(dir, 'go-build');
  if (!built.available) throw new Error(`the Go build left no server installation: ${built.reason}`);
  return built;
}

const ModuleInfo = z.object({ Dir: z.string().min(1) });

function makeOwnerWritable(dir: string): void {
  chmodSync(dir, statSync(dir).mode | 0o200);
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) makeOwnerWritable(p);
    else if (entry.isFile()) chmodSync(p, statSync(p).mode | 0o200);
  }
}

/** `go build` of `packages` into `outDir` inside the module `moduleDir`; niced: other work shares the cores. */
async function goBuild(go: string, moduleDir: string, outDir: string, packages: string[]): Promise<void> {
  const nice = findOnPath('nice');
  const argv = ['build', ...GO_BUILD_FLAGS, '-o', `${outDir}/`, ...packages];
  const [file, args] = nice ? [nice, ['-n', '10', go, ...argv]] : [go, argv];
  await new Promise<void>((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: moduleDir,
      env: { ...process.env, GOFLAGS: '-mod=mod', CGO_ENABLED: '0' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    child.once('error', reject);
    child.once('exit', (code, signal) =>
      code === 0
        ? resolve()
        : reject(new Error(`go build ${packages.join(' ')} failed (${signal ?? `exit ${code}`}): ${stderr.trim()}`)),
    );
  });
}

/** Where the module cache holds `module@version` (downloading it if needed). */
async function moduleDir(go: string, module: string, version: string): Promise<string> {
  const { stdout } = await run(go, ['mod', 'download', '-json', `${module}@${version}`], {
    env: { ...process.env, GOFLAGS: '-mod=mod' },
    maxBuffer: 16 * 1024 * 1024,
  });
  return ModuleInfo.parse(JSON.parse(stdout)).Dir;
}

async function buildWithGo(go: string, dir: string, onProgress?: (message: string) => void): Promise<void> {
  const staging = `${dir}.build-${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(join(staging, 'bin'), { recursive: true });
  const started = Date.now();
  const seconds = () => Math.round((Date.now() - started) / 1000);
  onProgress?.(
    `Building the Temporal server ${TEMPORAL_SERVER_VERSION} and its SQL tool with Go from the module proxy (first run only: seconds after the CLI was built, minutes on a cold Go build cache)…`,
  );
  const ticker = setInterval(() => onProgress?.(`  …still building the Temporal server (${seconds()}s)`), 30_000);
  const l = layout(staging);
  try {
    const mod = join(staging, 'module');
    mkdirSync(mod, { recursive: true });
    const graph = await moduleDir(go, BUILD_GRAPH_MODULE, TEMPORAL_CLI_VERSION);
    const goMod = readFileSync(join(graph, 'go.mod'), 'utf8');
    if (!goMod.includes(`\t${TEMPORAL_SERVER_MODULE} ${TEMPORAL_SERVER_VERSION}\n`))
      throw new Error(
        `${BUILD_GRAPH_MODULE}@${TEMPORAL_CLI_VERSION} does not require ${TEMPORAL_SERVER_MODULE} ${TEMPORAL_SERVER_VERSION}`,
      );
    writeFileSync(join(mod, 'go.mod'), goMod.replace(/^module .*$/m, 'module gastown.local/temporal-server-build'));
    cpSync(join(graph, 'go.sum'), join(mod, 'go.sum'));
    chmodSync(join(mod, 'go.sum'), 0o644);
    await goBuild(go, mod, join(staging, 'bin'), [
      `${TEMPORAL_SERVER_MODULE}/cmd/server`,
      `${TEMPORAL_SERVER_MODULE}/cmd/tools/sql`,
    ]);
    renameSync(join(staging, 'bin', 'server'), l.server);
    renameSync(join(staging, 'bin', 'sql'), l.sqlTool);
    const src = await moduleDir(go, TEMPORAL_SERVER_MODULE, TEMPORAL_SERVER_VERSION);
    mkdirSync(l.configDir, { recursive: true });
    cpSync(join(src, 'config', 'docker.yaml'), join(l.configDir, 'docker.yaml'));
    cpSync(join(src, 'schema', 'postgresql'), l.postgresSchemaDir, { recursive: true });
    const serverSeconds = seconds();
    onProgress?.(`  Temporal server built (${serverSeconds}s); now the Web UI server ${UI_SERVER_VERSION}…`);
    const uiNote = await buildUi(go, mod, staging).catch((err: unknown) => (err as Error).message);
    if (uiNote) onProgress?.(`  no Web UI server: ${uiNote}`);
    writeFileSync(
      join(staging, 'BUILD.json'),
      `${JSON.stringify({ server: TEMPORAL_SERVER_VERSION, ui: uiNote ? null : UI_SERVER_VERSION, flags: GO_BUILD_FLAGS, graph: `${BUILD_GRAPH_MODULE}@${TEMPORAL_CLI_VERSION}`, serverSeconds, totalSeconds: seconds(), builtAt: new Date().toISOString() }, null, 2)}\n`,
    );
    rmSync(join(staging, 'bin'), { recursive: true, force: true });
    rmSync(mod, { recursive: true, force: true });
    // Files copied from the module cache are read-only; the cache must stay removable by its owner.
    makeOwnerWritable(staging);
    rmSync(dir, { recursive: true, force: true });
    renameSync(staging, dir);
  } catch (err) {
    rmSync(staging, { recursive: true, force: true });
    throw new Error(`${(err as Error).message}\n${TEMPORAL_SERVER_HELP}`);
  } finally {
    clearInterval(ticker);
  }
  onProgress?.(`Temporal server ready in ${dir} (${seconds()}s).`);
}

/** The UI is optional: a failure is returned as the reason (the stack then runs without it), never thrown. */
async function buildUi(go: string, mod: string, staging: string): Promise<string | undefined> {
  const gobin = join(staging, 'ui-bin');
  mkdirSync(gobin, { recursive: true });
  await goBuild(go, mod, gobin, [`${UI_SERVER_MODULE}/cmd/server`]);
  const l = layout(staging);
  mkdirSync(l.uiConfigDir, { recursive: true });
  renameSync(join(gobin, 'server'), l.uiServer);
  rmSync(gobin, { recursive: true, force: true });
  const src = await moduleDir(go, UI_SERVER_MODULE, UI_SERVER_VERSION);
  cpSync(join(src, 'config', 'docker.yaml'), join(l.uiConfigDir, 'docker.yaml'));
  return undefined;
}
