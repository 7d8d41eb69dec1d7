/**
 * The embedded stack the bench measures, configured as `gt up` runs it: the Temporal dev server on a SQLite file
 * under a scratch GT_HOME, one town worker (town queue + host queue + agent gateway) with default policies, and the
 * Town/Convoy clients. Only the workflow bundle is built once up front, so no scenario pays for bundling.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@temporalio/client';
import { bundleWorkflowCode, DefaultLogger, Runtime } from '@temporalio/worker';
import { ConvoyClient } from '../client/convoys';
import { Town } from '../client/town';
import { startDevServer, type DevServer } from '../provisioning/dev-server';
import { quietLogger } from '../worker/logging';
import { createTownWorker, workflowBundleOptions, type TownWorker } from '../worker/worker';

export interface BenchStack {
  server: DevServer;
  client: Client;
  town: Town;
  convoys: ConvoyClient;
  worker: TownWorker;
  gtHome: string;
  taskQueue: string;
  stop(): Promise<void>;
}

export async function startStack(log: (m: string) => void): Promise<BenchStack> {
  // The worker logs at WARN: the bench's own output is the progress report. The bench handles Ctrl-C itself
  // (stops everything and exits) rather than letting the SDK only stop the worker under a waiting bench.
  Runtime.install({ logger: new DefaultLogger('WARN'), shutdownSignals: [] });
  const gtHome = mkdtempSync(join(tmpdir(), 'gt-bench-home-'));
  process.env.GT_HOME = gtHome;
  const taskQueue = 'bench';
  log(`GT_HOME ${gtHome}; starting the Temporal dev server (SQLite file, as \`gt up\`)…`);
  const server = await startDevServer({
    dbFilename: join(gtHome, 'temporal.db'),
    namespace: 'default',
    onProgress: log,
  });
  log(`bundling workflows…`);
  const { code } = await bundleWorkflowCode({ ...workflowBundleOptions, logger: quietLogger });
  const client = new Client({ connection: server.env.connection, namespace: server.namespace });
  const worker = await createTownWorker({
    connection: server.env.nativeConnection,
    namespace: server.namespace,
    taskQueue,
    hostId: 'bench-host',
    workflowBundle: { code },
    // Histories are read back and decoded by the bench, so payloads stay plain JSON whatever GT_PAYLOAD_CODEC says.
    dataConverter: {},
  });
  const running = worker.run();
  const town = new Town(client, taskQueue);
  return {
    server,
    client,
    town,
    convoys: new ConvoyClient(town),
    worker,
    gtHome,
    taskQueue,
    async stop() {
      await worker.shutdown();
      await running.catch(() => undefined);
      await server.stop();
    },
  };
}
