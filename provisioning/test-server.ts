/**
 * The time-skipping test server behind the fast workflow tier (`TestWorkflowEnvironment.createTimeSkipping`).
 *
 * The SDK would download Temporal's native build of it from temporal.download, which offline machines cannot reach.
 * The native build is a GraalVM image of the Java SDK's `io.temporal.testserver.TestServer`, which Maven Central
 * publishes as `io.temporal:temporal-test-server`; its `main(<port>)` is the same contract the SDK spawns. So, in
 * this order:
 *   1. TEMPORAL_TEST_SERVER_PATH (the native binary, or any executable taking `<port>`)
 *   2. a cached build under the user's cache dir (jars, a start script, a class-data-sharing archive)
 *   3. `mvn dependency:copy-dependencies` from Maven Central into that cache, when Java and Maven are present
 *   4. the SDK's own download (internet-connected machines without Maven)
 * Without Java (and no TEMPORAL_TEST_SERVER_PATH) there is nothing to run: the fast tier skips and says why.
 */
import { execFile, spawn } from 'node:child_process';
import { accessSync, constants, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { EphemeralServerExecutable } from '@temporalio/testing';
import { findOnPath } from './temporal-cli';

const run = promisify(execFile);

export const TEST_SERVER_ARTIFACT = 'io.temporal:temporal-test-server';
export const TEST_SERVER_VERSION = '1.38.0';
/** The test server logs through slf4j; without a binding it prints a warning on every start. */
const SLF4J_NOP = 'org.slf4j:slf4j-nop:1.7.36';

export type TestServerSource = 'TEMPORAL_TEST_SERVER_PATH' | 'cache' | 'maven-build' | 'sdk-download';
export type ResolvedTestServer =
  | { available: true; source: TestServerSource; executable: EphemeralServerExecutable; path?: string }
  | { available: false; reason: string };

export function testServerCacheDir(): string {
  const base = process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache');
  return join(base, 'gastown', `temporal-test-server-${TEST_SERVER_VERSION}`);
}

export const cachedTestServerPath = () => join(testServerCacheDir(), 'temporal-test-server');

const isExecutable = (p: string) => {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
};

export const TEST_SERVER_HELP = [
  'No time-skipping Temporal test server could be found or built. Any one of these fixes it:',
  '  - set TEMPORAL_TEST_SERVER_PATH to a `temporal-test-server` executable;',
  `  - install Java (17+) and Maven and run \`npm run provision\` (fetches ${TEST_SERVER_ARTIFACT}:${TEST_SERVER_VERSION} from Maven Central into ${testServerCacheDir()});`,
  '  - on a machine with internet access and Java absent, the SDK downloads the native test server by itself.',
].join('\n');

export interface ResolveTestServerOptions {
  /** Allow fetching the jars with Maven (a few seconds to a minute, once). */
  build?: boolean;
  onProgress?: (message: string) => void;
}

export async function resolveTestServer(options: ResolveTestServerOptions = {}): Promise<ResolvedTestServer> {
  const fromEnv = process.env.TEMPORAL_TEST_SERVER_PATH;
  if (fromEnv) {
    if (!isExecutable(fromEnv))
      throw new Error(`TEMPORAL_TEST_SERVER_PATH=${fromEnv} is not an executable file.\n${TEST_SERVER_HELP}`);
    return {
      available: true,
      source: 'TEMPORAL_TEST_SERVER_PATH',
      path: fromEnv,
      executable: { type: 'existing-path', path: fromEnv },
    };
  }
  const java = findOnPath('java');
  if (!java)
    return {
      available: false,
      reason:
        "Java is not installed (the time-skipping test server is the Java SDK's TestServer); install a JDK 17+ or set TEMPORAL_TEST_SERVER_PATH",
    };
  const cached = cachedTestServerPath();
  if (isExecutable(cached))
    return { available: true, source: 'cache', path: cached, executable: { type: 'existing-path', path: cached } };
  const mvn = findOnPath('mvn');
  if (mvn && options.build !== false) {
    await buildWithMaven(mvn, java, options.onProgress);
    return {
      available: true,
      source: 'maven-build',
      path: cached,
      executable: { type: 'existing-path', path: cached },
    };
  }
  return { available: true, source: 'sdk-download', executable: { type: 'cached-download' } };
}

const pom = (artifacts: string[]) => `<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>gastown</groupId>
  <artifactId>temporal-test-server-deps</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
${artifacts
  .map((a) => {
    const [groupId, artifactId, version] = a.split(':');
    return `    <dependency><groupId>${groupId}</groupId><artifactId>${artifactId}</artifactId><version>${version}</version></dependency>`;
  })
  .join('\n')}
  </dependencies>
</project>
`;

/**
 * The JVM must accept gRPC within the SDK's 5 s, also on a loaded 2-core machine: a class-data-sharing archive of
 * the server's own classes and the client compiler only bring a start from ~3 s down to ~0.5 s here.
 */
const startScript = (dir: string) => `#!/bin/sh
# The Java SDK's time-skipping test server (${TEST_SERVER_ARTIFACT}:${TEST_SERVER_VERSION}); made by provisioning/test-server.ts.
cds=; [ -s '${dir}/classes.jsa' ] && cds="-XX:SharedArchiveFile=${dir}/classes.jsa"
exec java $cds -Xlog:cds=off -Xlog:cds+dynamic=off -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp '${dir}/lib/*' io.temporal.testserver.TestServer "$@"
`;

async function buildWithMaven(mvn: string, java: string, onProgress?: (message: string) => void): Promise<void> {
  const dir = testServerCacheDir();
  const staging = `${dir}.build-${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  onProgress?.(
    `Fetching the Temporal test server ${TEST_SERVER_ARTIFACT}:${TEST_SERVER_VERSION} with Maven (first run only)…`,
  );
  const started = Date.now();
  try {
    writeFileSync(join(staging, 'pom.xml'), pom([`${TEST_SERVER_ARTIFACT}:${TEST_SERVER_VERSION}`, SLF4J_NOP]));
    await run(
      mvn,
      [
        '-B',
        '-q',
        'dependency:copy-dependencies',
        '-DincludeScope=runtime',
        `-DoutputDirectory=${join(staging, 'lib')}`,
      ],
      {
        cwd: staging,
        maxBuffer: 64 * 1024 * 1024,
      },
    );
    // The archive records the classpath it was made with, so it is made where the jars will stay.
    rmSync(dir, { recursive: true, force: true });
    renameSync(staging, dir);
  } catch (err) {
    rmSync(staging, { recursive: true, force: true });
    throw new Error(
      `mvn dependency:copy-dependencies of ${TEST_SERVER_ARTIFACT}:${TEST_SERVER_VERSION} failed: ${(err as Error).message}\n${TEST_SERVER_HELP}`,
    );
  }
  await dumpClassArchive(java, dir);
  // Published last: a reader who sees the script sees the jars and the archive too.
  const script = join(dir, 'temporal-test-server.tmp');
  writeFileSync(script, startScript(dir), { mode: 0o755 });
  renameSync(script, cachedTestServerPath());
  onProgress?.(
    `Temporal test server ready at ${cachedTestServerPath()} (${Math.round((Date.now() - started) / 1000)}s).`,
  );
}

/**
 * Starts the server once with -XX:ArchiveClassesAtExit and stops it when it listens: the JVM writes the archive on
 * exit. Without an archive (or with one a later JVM update invalidates) the server still starts, only slower.
 */
async function dumpClassArchive(java: string, dir: string): Promise<void> {
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const archive = join(dir, 'classes.jsa');
  const child = spawn(
    java,
    [
      `-XX:ArchiveClassesAtExit=${archive}`,
      '-Xlog:cds=off',
      '-XX:TieredStopAtLevel=1',
      '-XX:+UseSerialGC',
      '-cp',
      `${dir}/lib/*`,
      'io.temporal.testserver.TestServer',
      String(port),
    ],
    {
      stdio: 'ignore',
    },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline && child.exitCode === null && !(await listening(port)))
    await new Promise((r) => setTimeout(r, 100));
  child.kill('SIGTERM');
  await exited;
}

const listening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
