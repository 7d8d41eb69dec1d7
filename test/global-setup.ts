/**
 * One Temporal dev server, one workflow bundle and fresh CLI bundles (for bin/gt) per test run. Test files
 * connect to the server by address and each test uses its own task queue, so tests never see each other's work.
 * The time-skipping test server of the fast workflow tier (test/workflows-fast) is resolved (and built, once) here
 * too, so its files never race to build it; each of them starts its own server, since skipped time is global to one.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
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
    temporalAddress: string;
    temporalNamespace: string;
    workflowBundlePath: string;
    timeSkippingServer: TimeSkippingServer;
  }
}

export const ARTIFACTS = join(import.meta.dirname, '.artifacts');

let server: DevServer | undefined;

export default async function setup(project: TestProject) {
  mkdirSync(ARTIFACTS, { recursive: true });
  server = await startDevServer({
    namespace: 'default',
    onProgress: (m) => console.error(m),
    // Small histories in tests make continue-as-new paths run for real. The history queue readers run at the town's
    // setting (provisioning/server-settings.ts), as on every server we own.
    dynamicConfig: { 'limit.historyCount.suggestContinueAsNew': 2000 },
  });
  await buildCliBundles();
  const { code } = await bundleWorkflowCode({ ...workflowBundleOptions, logger: quietLogger });
  const bundlePath = join(ARTIFACTS, 'workflow-bundle.js');
  writeFileSync(bundlePath, code);
  project.provide('temporalAddress', server.address);
  project.provide('temporalNamespace', server.namespace);
  project.provide('workflowBundlePath', bundlePath);
  project.provide('timeSkippingServer', await timeSkippingServer());
  console.error(`Temporal dev server for tests at ${server.address} (CLI: ${server.cli.source})`);
  return async () => {
    await server?.stop();
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
