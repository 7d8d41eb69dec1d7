/**
 * What `gt up` and `gt worker` run (client/commands/serve.ts registers them): loaded only when one of them runs, as
 * the worker, the dev server and the Temporal packages are what makes a CLI slow to start.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Runtime } from '@temporalio/worker';
import { assertTownKeyGiven } from '../codec/settings';
import { gtHome, hostId, paths } from '../host/home';
import { startDevServer } from '../provisioning/dev-server';
import { installWorkerRuntime } from '../worker/logging';
import { createTownWorker, type TownWorker } from '../worker/worker';
import { taskQueue } from '../host/connection';
import { connectNative } from '../worker/connection';

export interface UpOptions {
  bind: string;
  port: number;
  uiPort: number;
  gatewayPort: number;
  ui: boolean;
  namespace: string;
}

/** A start that failed must end the process: the Runtime installed for the worker would keep it alive. */
async function failStart(err: unknown): Promise<never> {
  await Runtime.instance().shutdown();
  throw err;
}

/** `gt up`: the embedded stack in the foreground. */
export async function runUp(o: UpOptions): Promise<void> {
  const home = gtHome();
  mkdirSync(home, { recursive: true });
  // Structured logs (GT_LOG_FORMAT / GT_LOG_LEVEL) and the Prometheus endpoint (GT_METRICS_ADDRESS), as for `gt worker`.
  installWorkerRuntime();
  // Set once the worker exists; the server may die before that.
  const started: { worker?: TownWorker } = {};
  const server = await startDevServer({
    dbFilename: paths.temporalDb(home),
    pidFile: join(home, 'temporal.pid'),
    logFile: join(home, 'temporal.log'),
    ip: o.bind,
    port: o.port,
    uiPort: o.ui ? o.uiPort : undefined,
    namespace: o.namespace,
    onProgress: (m) => console.error(m),
    // Without its server the worker could only retry forever: stop, say why, and leave the restart to the user
    // (or their supervisor), which resumes every bead from the SQLite file.
    onExit: (reason) => {
      console.error(`gt up: ${reason}; stopping. Run gt up again to resume.`);
      process.exitCode = 1;
      const drained = started.worker?.shutdown() ?? Promise.resolve();
      void Promise.race([drained, new Promise((r) => setTimeout(r, 5_000))]).finally(() => process.exit(1));
    },
  }).catch(failStart);
  const worker = await createTownWorker({
    connection: server.env.nativeConnection,
    namespace: o.namespace,
    taskQueue: taskQueue(),
    gateway: { port: o.gatewayPort },
  }).catch(async (err: unknown) => {
    await server.stop();
    return failStart(err);
  });
  started.worker = worker;
  console.log(
    [
      'Gas Town is up.',
      `  Temporal     ${server.address} (namespace ${o.namespace}; CLI: ${server.cli.source})`,
      server.uiUrl ? `  Web UI       ${server.uiUrl}/namespaces/${o.namespace}/workflows` : '  Web UI       (disabled)',
      `  Gateway      ${worker.gateway.url}`,
      `  Worker       task queues ${taskQueue()} and ${worker.hostQueue}`,
      `  GT_HOME      ${home}`,
      'Press Ctrl-C to stop; work resumes on the next `gt up`.',
    ].join('\n'),
  );
  try {
    await worker.run();
  } finally {
    await server.stop();
    console.log('Gas Town stopped.');
  }
}

/** `gt worker`: a worker and agent gateway against an existing Temporal. */
export async function runWorker(o: { gatewayPort: number; gatewayHost: string }): Promise<void> {
  assertTownKeyGiven();
  const native = await connectNative();
  const worker = await createTownWorker({
    connection: native.connection,
    namespace: native.namespace,
    taskQueue: taskQueue(),
    gateway: { port: o.gatewayPort, host: o.gatewayHost },
  });
  console.log(
    `worker ${hostId()} on ${native.address} (namespace ${native.namespace}), queues ${taskQueue()} and ${worker.hostQueue}; gateway ${worker.gateway.url}`,
  );
  try {
    await worker.run();
  } finally {
    await native.connection.close();
  }
}
