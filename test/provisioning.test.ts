/**
 * The Temporal CLI resolution order. Executables here are stand-ins (the real binary is used by every other test,
 * and a fresh machine without the cache builds it for real with Go in `npm run provision`).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { scratchEnvironment, standIn } from './helpers/stand-ins';
import {
  cachedCliPath,
  PROVISIONING_HELP,
  resolveTemporalCli,
  TEMPORAL_CLI_MODULE,
  TEMPORAL_CLI_VERSION,
} from '../provisioning/temporal-cli';

const scratch = scratchEnvironment('gt-prov-', ['TEMPORAL_CLI_PATH'], 'empty-bin');
const executable = standIn;

describe('resolveTemporalCli', () => {
  it('prefers TEMPORAL_CLI_PATH', async () => {
    const exe = executable(join(scratch.dir(), 'custom', 'temporal'));
    executable(join(scratch.dir(), 'bin', 'temporal'));
    process.env.PATH = join(scratch.dir(), 'bin');
    process.env.TEMPORAL_CLI_PATH = exe;
    expect(await resolveTemporalCli()).toEqual({
      source: 'TEMPORAL_CLI_PATH',
      path: exe,
      executable: { type: 'existing-path', path: exe },
    });
  });

  it('rejects a TEMPORAL_CLI_PATH that is not executable, naming every option', async () => {
    process.env.TEMPORAL_CLI_PATH = join(scratch.dir(), 'nope');
    const err = (await resolveTemporalCli().catch((e: unknown) => e)) as Error;
    expect(err.message).toContain(`TEMPORAL_CLI_PATH=${join(scratch.dir(), 'nope')} is not an executable file.`);
    expect(err.message).toContain(PROVISIONING_HELP);
    for (const option of ['TEMPORAL_CLI_PATH', 'on PATH', 'npm run provision', 'downloads the CLI'])
      expect(err.message).toContain(option);
  });

  it('then uses `temporal` on PATH', async () => {
    const exe = executable(join(scratch.dir(), 'bin', 'temporal'));
    process.env.PATH = `${join(scratch.dir(), 'empty-bin')}:${join(scratch.dir(), 'bin')}`;
    expect(await resolveTemporalCli()).toMatchObject({ source: 'PATH', path: exe });
  });

  it('then the cached build', async () => {
    const exe = executable(cachedCliPath());
    expect(cachedCliPath()).toBe(
      join(scratch.dir(), 'cache', 'gastown', `temporal-cli-${TEMPORAL_CLI_VERSION}`, 'temporal'),
    );
    expect(await resolveTemporalCli()).toMatchObject({ source: 'cache', path: exe });
  });

  it('then builds it with `go install` into the cache', async () => {
    const argsFile = join(scratch.dir(), 'go-args');
    executable(
      join(scratch.dir(), 'gobin', 'go'),
      `echo "$@" > ${argsFile}\necho "GOBIN=$GOBIN" >> ${argsFile}\nprintf '#!/bin/sh\\n' > "$GOBIN/temporal"\n/bin/chmod +x "$GOBIN/temporal"`,
    );
    process.env.PATH = join(scratch.dir(), 'gobin');
    const progress: string[] = [];
    const resolved = await resolveTemporalCli({ onProgress: (m) => progress.push(m) });
    expect(resolved).toMatchObject({ source: 'go-build', path: cachedCliPath() });
    const [args, gobin] = readFileSync(argsFile, 'utf8').trim().split('\n');
    expect(args).toBe(`install ${TEMPORAL_CLI_MODULE}@${TEMPORAL_CLI_VERSION}`);
    expect(gobin).toMatch(new RegExp(`^GOBIN=${join(scratch.dir(), 'cache', 'gastown')}`));
    expect(progress[0]).toMatch(/Building the Temporal CLI v1\.5\.1 with Go/);
    // The next resolution finds the build in the cache without running go again.
    expect(await resolveTemporalCli({ build: false })).toMatchObject({ source: 'cache' });
  });

  it('reports a failed go build with every option', async () => {
    executable(join(scratch.dir(), 'gobin', 'go'), 'echo "proxy unreachable" >&2; exit 1');
    process.env.PATH = join(scratch.dir(), 'gobin');
    const err = (await resolveTemporalCli().catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(/go install github.com\/temporalio\/cli\/cmd\/temporal@v1\.5\.1 failed/);
    expect(err.message).toContain(PROVISIONING_HELP);
  });

  it('falls back to the SDK download when nothing else is possible', async () => {
    expect(await resolveTemporalCli({ build: false })).toEqual({
      source: 'sdk-download',
      executable: { type: 'cached-download' },
    });
  });
});
