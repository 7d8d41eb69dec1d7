/**
 * `docker compose config` without the compose v2 plugin: scripts/compose-config is a small Go program on
 * compose-spec/compose-go, the library `docker compose` itself loads files with (the specification's JSON schema,
 * interpolation from the environment, normalisation, consistency checks). Debian bookworm ships only docker-compose
 * v1, which predates the specification (it refuses the top-level `name`), and the plugin cannot be fetched from a hub
 * here; Go modules can. Built once with Go into the cache, keyed by the program's sources.
 *
 * It reads the compose file and the environment it is given; it starts nothing and talks to no Docker engine.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from './compose-settings';
import { findGo } from './temporal-server';

const run = promisify(execFile);
export const COMPOSE_CONFIG_SOURCE = join(repoRoot, 'scripts', 'compose-config');
const SOURCES = ['go.mod', 'go.sum', 'main.go'];

const sourceKey = () => {
  const hash = createHash('sha256');
  for (const f of SOURCES) hash.update(readFileSync(join(COMPOSE_CONFIG_SOURCE, f)));
  return hash.digest('hex').slice(0, 12);
};

export const composeConfigPath = () =>
  join(
    process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'),
    'gastown',
    `compose-config-${sourceKey()}`,
    'compose-config',
  );

export type ResolvedComposeConfig = { available: true; path: string } | { available: false; reason: string };

/** The cached build, else a Go build now (seconds with a warm module cache), else why not. */
export async function resolveComposeConfig(onProgress?: (m: string) => void): Promise<ResolvedComposeConfig> {
  const path = composeConfigPath();
  if (existsSync(path)) return { available: true, path };
  const go = findGo();
  if (!go) return { available: false, reason: 'Go is not installed: it builds scripts/compose-config' };
  onProgress?.(`Building scripts/compose-config (compose-spec/compose-go) into ${path}…`);
  const staging = `${path}.build-${process.pid}`;
  mkdirSync(join(path, '..'), { recursive: true });
  try {
    await run(go, ['build', '-ldflags=-s -w', '-o', staging, '.'], {
      cwd: COMPOSE_CONFIG_SOURCE,
      env: { ...process.env, CGO_ENABLED: '0', GOFLAGS: '-mod=mod' },
      maxBuffer: 16 * 1024 * 1024,
    });
    renameSync(staging, path);
  } catch (err) {
    const e = err as Error & { stderr?: string };
    return { available: false, reason: `go build of scripts/compose-config failed: ${e.stderr?.trim() || e.message}` };
  } finally {
    rmSync(staging, { force: true });
  }
  return { available: true, path };
}

export type ComposeConfigResult = { ok: true; yaml: string } | { ok: false; error: string };

/**
 * `docker compose [--profile p] config` of docker-compose.yml with exactly `env` as the environment (nothing of the
 * caller's shell leaks in, so a result does not depend on who runs it).
 */
export async function composeConfig(
  tool: string,
  env: Record<string, string>,
  profiles: string[] = [],
): Promise<ComposeConfigResult> {
  try {
    const { stdout } = await run(tool, ['-f', 'docker-compose.yml', ...profiles.flatMap((p) => ['--profile', p])], {
      cwd: repoRoot,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
      maxBuffer: 16 * 1024 * 1024,
    });
    return { ok: true, yaml: stdout };
  } catch (err) {
    const e = err as Error & { stderr?: string };
    return { ok: false, error: (e.stderr ?? e.message).trim() };
  }
}
