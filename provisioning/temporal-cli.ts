/**
 * Finding (or making) the `temporal` CLI that hosts the embedded dev server, in this order:
 *   1. TEMPORAL_CLI_PATH
 *   2. `temporal` on PATH
 *   3. a cached build under the user's cache dir
 *   4. `go install github.com/temporalio/cli/cmd/temporal@v1.5.1` into that cache, when Go is present
 *      (v1.5.1 is the newest CLI whose go.mod has no replace directives, so `go install` accepts it)
 *   5. the SDK's own cached download (internet-connected machines)
 */
import { execFile } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, renameSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import type { EphemeralServerExecutable } from '@temporalio/testing';

const run = promisify(execFile);

export const TEMPORAL_CLI_MODULE = 'github.com/temporalio/cli/cmd/temporal';
export const TEMPORAL_CLI_VERSION = 'v1.5.1';

export type CliSource = 'TEMPORAL_CLI_PATH' | 'PATH' | 'cache' | 'go-build' | 'sdk-download';
export interface ResolvedCli {
  source: CliSource;
  executable: EphemeralServerExecutable;
  path?: string;
}

export function cacheDir(): string {
  const base = process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache');
  return join(base, 'gastown', `temporal-cli-${TEMPORAL_CLI_VERSION}`);
}

export const cachedCliPath = () => join(cacheDir(), 'temporal');

const isExecutable = (p: string) => {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
};

export function findOnPath(name: string, pathVar = process.env.PATH ?? ''): string | undefined {
  return pathVar
    .split(delimiter)
    .filter(Boolean)
    .map((dir) => join(dir, name))
    .find(isExecutable);
}

export const PROVISIONING_HELP = [
  'No Temporal CLI could be found or built. Any one of these fixes it:',
  '  - set TEMPORAL_CLI_PATH to a `temporal` executable;',
  '  - put `temporal` on PATH (https://docs.temporal.io/cli);',
  `  - install Go and run \`npm run provision\` (builds ${TEMPORAL_CLI_MODULE}@${TEMPORAL_CLI_VERSION} into ${cacheDir()});`,
  '  - on a machine with internet access the SDK downloads the CLI by itself.',
].join('\n');

export interface ResolveOptions {
  /** Allow building with Go (slow the first time, minutes). */
  build?: boolean;
  onProgress?: (message: string) => void;
}

export async function resolveTemporalCli(options: ResolveOptions = {}): Promise<ResolvedCli> {
  const fromEnv = process.env.TEMPORAL_CLI_PATH;
  if (fromEnv) {
    if (!isExecutable(fromEnv))
      throw new Error(`TEMPORAL_CLI_PATH=${fromEnv} is not an executable file.\n${PROVISIONING_HELP}`);
    return { source: 'TEMPORAL_CLI_PATH', path: fromEnv, executable: { type: 'existing-path', path: fromEnv } };
  }
  const onPath = findOnPath('temporal');
  if (onPath) return { source: 'PATH', path: onPath, executable: { type: 'existing-path', path: onPath } };
  const cached = cachedCliPath();
  if (isExecutable(cached))
    return { source: 'cache', path: cached, executable: { type: 'existing-path', path: cached } };
  const go = findOnPath('go') ?? (existsSync('/usr/local/go/bin/go') ? '/usr/local/go/bin/go' : undefined);
  if (go && options.build !== false) {
    await buildWithGo(go, options.onProgress);
    return { source: 'go-build', path: cached, executable: { type: 'existing-path', path: cached } };
  }
  return { source: 'sdk-download', executable: { type: 'cached-download' } };
}

async function buildWithGo(go: string, onProgress?: (message: string) => void): Promise<void> {
  const dir = cacheDir();
  const staging = join(dir, `build-${process.pid}`);
  mkdirSync(staging, { recursive: true });
  onProgress?.(
    `Building the Temporal CLI ${TEMPORAL_CLI_VERSION} with Go from the module proxy (first run only; a few minutes)…`,
  );
  const started = Date.now();
  const ticker = setInterval(
    () => onProgress?.(`  …still building (${Math.round((Date.now() - started) / 1000)}s)`),
    30_000,
  );
  try {
    await run(go, ['install', `${TEMPORAL_CLI_MODULE}@${TEMPORAL_CLI_VERSION}`], {
      env: { ...process.env, GOBIN: staging, GOFLAGS: '-mod=mod', CGO_ENABLED: '0' },
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (err) {
    throw new Error(
      `go install ${TEMPORAL_CLI_MODULE}@${TEMPORAL_CLI_VERSION} failed: ${(err as Error).message}\n${PROVISIONING_HELP}`,
    );
  } finally {
    clearInterval(ticker);
  }
  // Atomic publish: a concurrent reader never sees a half-written binary.
  renameSync(join(staging, 'temporal'), cachedCliPath());
  onProgress?.(`Temporal CLI ready at ${cachedCliPath()} (${Math.round((Date.now() - started) / 1000)}s).`);
}
