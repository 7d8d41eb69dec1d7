/**
 * The time-skipping test server's resolution order (provisioning/test-server.ts). Executables here are stand-ins;
 * the fast workflow tier runs the real server, built for real by global setup on a machine without the cache.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { scratchEnvironment, standIn } from './helpers/stand-ins';
import {
  cachedTestServerPath,
  resolveTestServer,
  TEST_SERVER_HELP,
  TEST_SERVER_VERSION,
  testServerCacheDir,
} from '../provisioning/test-server';

const scratch = scratchEnvironment('gt-tts-', ['TEMPORAL_TEST_SERVER_PATH'], 'bin');
const executable = standIn;

describe('resolveTestServer', () => {
  it('prefers TEMPORAL_TEST_SERVER_PATH, Java or not', async () => {
    const exe = executable(join(scratch.dir(), 'native', 'temporal-test-server'));
    process.env.TEMPORAL_TEST_SERVER_PATH = exe;
    expect(await resolveTestServer()).toEqual({
      available: true,
      source: 'TEMPORAL_TEST_SERVER_PATH',
      path: exe,
      executable: { type: 'existing-path', path: exe },
    });
  });

  it('rejects a TEMPORAL_TEST_SERVER_PATH that is not executable, naming every option', async () => {
    process.env.TEMPORAL_TEST_SERVER_PATH = join(scratch.dir(), 'nope');
    const err = (await resolveTestServer().catch((e: unknown) => e)) as Error;
    expect(err.message).toContain(TEST_SERVER_HELP);
    for (const option of ['TEMPORAL_TEST_SERVER_PATH', 'Maven', 'npm run provision'])
      expect(err.message).toContain(option);
  });

  it('is unavailable, saying why, without Java', async () => {
    executable(join(scratch.dir(), 'bin', 'mvn'));
    expect(await resolveTestServer()).toEqual({
      available: false,
      reason: expect.stringMatching(/Java is not installed/) as string,
    });
  });

  it('uses the cached build', async () => {
    executable(join(scratch.dir(), 'bin', 'java'));
    const exe = executable(cachedTestServerPath());
    expect(cachedTestServerPath()).toBe(
      join(scratch.dir(), 'cache', 'gastown', `temporal-test-server-${TEST_SERVER_VERSION}`, 'temporal-test-server'),
    );
    expect(await resolveTestServer()).toMatchObject({ available: true, source: 'cache', path: exe });
  });

  it('fetches the jars with Maven into the cache and writes a start script for the SDK', async () => {
    executable(join(scratch.dir(), 'bin', 'java'));
    // A stand-in Maven: records its arguments and "copies" one jar where it is told to.
    executable(
      join(scratch.dir(), 'bin', 'mvn'),
      `PATH=/usr/bin:/bin\necho "$@" > ${join(scratch.dir(), 'mvn-args')}\nfor a in "$@"; do case "$a" in -DoutputDirectory=*) mkdir -p "\${a#*=}" && touch "\${a#*=}/temporal-test-server-${TEST_SERVER_VERSION}.jar";; esac; done`,
    );
    const resolved = await resolveTestServer();
    expect(resolved).toMatchObject({ available: true, source: 'maven-build', path: cachedTestServerPath() });
    expect(readFileSync(join(scratch.dir(), 'mvn-args'), 'utf8')).toMatch(/dependency:copy-dependencies/);
    expect(readFileSync(join(testServerCacheDir(), 'pom.xml'), 'utf8')).toContain(
      `<artifactId>temporal-test-server</artifactId><version>${TEST_SERVER_VERSION}</version>`,
    );
    expect(existsSync(join(testServerCacheDir(), 'lib', `temporal-test-server-${TEST_SERVER_VERSION}.jar`))).toBe(true);
    expect(readFileSync(cachedTestServerPath(), 'utf8')).toMatch(
      /exec java .* io\.temporal\.testserver\.TestServer "\$@"/,
    );
  });

  it('falls back to the SDK download with Java but without Maven', async () => {
    executable(join(scratch.dir(), 'bin', 'java'));
    expect(await resolveTestServer()).toEqual({
      available: true,
      source: 'sdk-download',
      executable: { type: 'cached-download' },
    });
  });
});
