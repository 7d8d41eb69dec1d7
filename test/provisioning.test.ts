/**
 * The Temporal CLI resolution order. Executables here are stand-ins (the real binary is used by every other test,
 * and a fresh machine without the cache builds it for real with Go in `npm run provision`).
 */
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cachedCliPath, PROVISIONING_HELP, resolveTemporalCli, TEMPORAL_CLI_MODULE, TEMPORAL_CLI_VERSION } from '../provisioning/temporal-cli';

const saved = { ...process.env };
let dir: string;

const executable = (path: string, body = 'exit 0') => {
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
};

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'gt-prov-'));
  delete process.env.TEMPORAL_CLI_PATH;
  process.env.XDG_CACHE_HOME = join(dir, 'cache');
  process.env.PATH = join(dir, 'empty-bin');
});
afterEach(() => {
  process.env = { ...saved };
});

describe('resolveTemporalCli', () => {
  it('prefers TEMPORAL_CLI_PATH', async () => {
    const exe = executable(join(dir, 'custom', 'temporal'));
    executable(join(dir, 'bin', 'temporal'));
    process.env.PATH = join(dir, 'bin');
    process.env.TEMPORAL_CLI_PATH = exe;
    expect(await resolveTemporalCli()).toEqual({ source: 'TEMPORAL_CLI_PATH', path: exe, executable: { type: 'existing-path', path: exe } });
  });

  it('rejects a TEMPORAL_CLI_PATH that is not executable, naming every option', async () => {
    process.env.TEMPORAL_CLI_PATH = join(dir, 'nope');
    const err = (await resolveTemporalCli().catch((e: unknown) => e)) as Error;
    expect(err.message).toContain(`TEMPORAL_CLI_PATH=${join(dir, 'nope')} is not an executable file.`);
    expect(err.message).toContain(PROVISIONING_HELP);
    for (const option of ['TEMPORAL_CLI_PATH', 'on PATH', 'npm run provision', 'downloads the CLI']) expect(err.message).toContain(option);
  });

  it('then uses `temporal` on PATH', async () => {
    const exe = executable(join(dir, 'bin', 'temporal'));
    process.env.PATH = `${join(dir, 'empty-bin')}:${join(dir, 'bin')}`;
    expect(await resolveTemporalCli()).toMatchObject({ source: 'PATH', path: exe });
  });

  it('then the cached build', async () => {
    const exe = executable(cachedCliPath());
    expect(cachedCliPath()).toBe(join(dir, 'cache', 'gastown', `temporal-cli-${TEMPORAL_CLI_VERSION}`, 'temporal'));
    expect(await resolveTemporalCli()).toMatchObject({ source: 'cache', path: exe });
  });

  it('then builds it with `go install` into the cache', async () => {
    const argsFile = join(dir, 'go-args');
    executable(join(dir, 'gobin', 'go'), `echo "$@" > ${argsFile}\necho "GOBIN=$GOBIN" >> ${argsFile}\nprintf '#!/bin/sh\\n' > "$GOBIN/temporal"\n/bin/chmod +x "$GOBIN/temporal"`);
    process.env.PATH = join(dir, 'gobin');
    const progress: string[] = [];
    const resolved = await resolveTemporalCli({ onProgress: (m) => progress.push(m) });
    expect(resolved).toMatchObject({ source: 'go-build', path: cachedCliPath() });
    const [args, gobin] = readFileSync(argsFile, 'utf8').trim().split('\n');
    expect(args).toBe(`install ${TEMPORAL_CLI_MODULE}@${TEMPORAL_CLI_VERSION}`);
    expect(gobin).toMatch(new RegExp(`^GOBIN=${join(dir, 'cache', 'gastown')}`));
    expect(progress[0]).toMatch(/Building the Temporal CLI v1\.5\.1 with Go/);
    // The next resolution finds the build in the cache without running go again.
    expect(await resolveTemporalCli({ build: false })).toMatchObject({ source: 'cache' });
  });

  it('reports a failed go build with every option', async () => {
    executable(join(dir, 'gobin', 'go'), 'echo "proxy unreachable" >&2; exit 1');
    process.env.PATH = join(dir, 'gobin');
    const err = (await resolveTemporalCli().catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(/go install github.com\/temporalio\/cli\/cmd\/temporal@v1\.5\.1 failed/);
    expect(err.message).toContain(PROVISIONING_HELP);
  });

  it('falls back to the SDK download when nothing else is possible', async () => {
    expect(await resolveTemporalCli({ build: false })).toEqual({ source: 'sdk-download', executable: { type: 'cached-download' } });
  });
});
