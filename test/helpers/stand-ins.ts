/**
 * Stand-in executables and a scratch environment for provisioning tests: each test gets a fresh directory, an empty
 * PATH and its own XDG cache, and the process environment is restored afterwards, so what a resolver finds is only
 * what the test put there.
 */
import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach } from 'vitest';

/** Writes an executable shell script at `path` (creating its directory) and returns the path. */
export function standIn(path: string, body = 'exit 0'): string {
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

/** Registers the per-test scratch environment; `dir()` is the current test's directory. */
export function scratchEnvironment(prefix: string, unset: string[], emptyPath = 'empty-bin'): { dir: () => string } {
  const saved = { ...process.env };
  let dir = '';
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), prefix));
    for (const name of unset) delete process.env[name];
    process.env.XDG_CACHE_HOME = join(dir, 'cache');
    process.env.PATH = join(dir, emptyPath);
  });
  afterEach(() => {
    process.env = { ...saved };
  });
  return { dir: () => dir };
}
