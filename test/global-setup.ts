/**
 * One Temporal dev server per vitest worker, one workflow bundle and fresh CLI bundles (for bin/gt) per test run.
 * Files run in parallel, one per worker at a time, each on its worker's server (test/helpers/server.ts): workflow ids
 * come from names files choose freely, so files running at once never share a server; within a file each test
 * uses its own task queue, so tests never see each other's work.
 * The time-skipping test server of the fast workflow tier (test/workflows-fast) is resolved (and built, once) here
 * too, so its files never race to build it; each of them starts its own server, since skipped time is global to one.
 *
 * Every scratch directory of the run (the tests' repositories and GT_HOMEs, their servers', agents' and git's temporary
 * files: anything that asks the OS for its temporary directory) goes under one directory of its own, TMPDIR for every
 * process the run starts. A run that passes removes it (about 90 MB here); one that fails keeps it for a look, as does
 * GT_KEEP_TEST_TMP=1.
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import type { TestProject } from 'vitest/node';
import { buildCliBundles } from '../provisioning/cli-bundles';
import { startDevServer, type DevServer } from '../provisioning/dev-server';
import { resolveTestServer } from '../provisioning/test-server';
import type { TimeSkippingServer } from './helpers/time-skipping';
import { workflowBundleOptions } from '../worker/worker';
import { quietLogger } from '../worker/logging';

declare module 'vitest' {
  export interface ProvidedContext {
    /** One address per vitest worker: a file finds its own with temporalAddress() (test/helpers/server.ts). */
    temporalServers: string[];
    temporalNamespace: string;
    workflowBundlePath: string;
    timeSkippingServer: TimeSkippingServer;
  }
}

export const ARTIFACTS = join(import.meta.dirname, '.artifacts');

let servers: DevServer[] = [];

export default async function setup(project: TestProject) {
  mkdirSync(ARTIFACTS, { recursive: true });
  // Before anything starts: the servers below and the test files' processes inherit it.
  const scratch = mkdtempSync(join(tmpdir(), 'gt-test-run-'));
  // Searchable (not listable) by others, as a path to a state directory under /tmp is: PostgreSQL runs as its own user
  // when we are root, and must reach its cluster in a test's state directory (provisioning/prod-stack.ts). What each
  // test makes in it stays as private as mkdtemp makes it (0700).
  chmodSync(scratch, 0o711);
  process.env.TMPDIR = scratch;
  const start = () =>
    startDevServer({
      namespace: 'default',
      onProgress: (m) => console.error(m),
      // Small histories in tests make continue-as-new paths run for real. The history queue readers run at the
      // town's setting (provisioning/server-settings.ts), as on every server we own.
      dynamicConfig: { 'limit.historyCount.suggestContinueAsNew': 2000 },
    });
  // The first alone (it resolves, and may build, the CLI), the others together.
  const started = await Promise.allSettled([start()]);
  if (started[0].status === 'fulfilled')
    started.push(...(await Promise.allSettled(Array.from({ length: project.config.maxWorkers - 1 }, start))));
  servers = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const failed = started.find((s) => s.status === 'rejected');
  if (failed) {
    await Promise.all(servers.map((s) => s.stop()));
    throw failed.reason;
  }
  await buildCliBundles();
  const { code } = await bundleWorkflowCode({ ...workflowBundleOptions, logger: quietLogger });
  const bundlePath = join(ARTIFACTS, 'workflow-bundle.js');
  writeFileSync(bundlePath, code);
  project.provide(
    'temporalServers',
    servers.map((s) => s.address),
  );
  project.provide('temporalNamespace', servers[0]!.namespace);
  project.provide('workflowBundlePath', bundlePath);
  project.provide('timeSkippingServer', await timeSkippingServer());
  console.error(
    `Temporal dev servers for tests (one per worker) at ${servers.map((s) => s.address).join(', ')} (CLI: ${servers[0]!.cli.source})`,
  );
  return async () => {
    await Promise.all(servers.map((s) => s.stop()));
    const { state } = project.vitest;
    const failed = state.getCountOfFailedTests() > 0 || state.getFailedFilepaths().length > 0;
    if (failed || state.getUnhandledErrors().length > 0 || process.env.GT_KEEP_TEST_TMP === '1') {
      console.error(`The run's scratch directories are kept in ${scratch}`);
      return;
    }
    try {
      rmSync(scratch, { recursive: true, force: true, maxRetries: 3 });
    } catch (err) {
      // A file the run could not remove (written by a container as another user) costs a line, not the run.
      console.error(`Could not remove the run's scratch directories in ${scratch}: ${(err as Error).message}`);
    }
  };
}

/** A build that fails is an error of the fast tier's tests; only a machine without Java skips them. */
async function timeSkippingServer(): Promise<TimeSkippingServer> {
  try {
    const resolved = await resolveTestServer({ onProgress: (m) => console.error(m) });
    return resolved.available ? { executable: resolved.executable } : { skip: resolved.reason };
  } catch (err) {
    return { error: (err as Error).message };
  }
}
