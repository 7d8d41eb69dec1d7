/** `gt up` (embedded stack in the foreground) and `gt worker` (worker + gateway against any cluster). */
import { mkdirSync } from 'node:fs';
import { Client } from '@temporalio/client';
import type { Command } from 'commander';
import { gtHome, hostId, paths } from '../../host/home';
import { startDevServer } from '../../provisioning/dev-server';
import { installWorkerRuntime } from '../../worker/logging';
import { createTownWorker } from '../../worker/worker';
import { clientDataConverter, connectClient, connectNative } from '../connection';
import { taskQueue } from '../town';
import { intArg } from './with-town';

interface UpOptions {
  port: number;
  uiPort: number;
  gatewayPort: number;
  ui: boolean;
  namespace: string;
}

export function registerServeCommands(program: Command): void {
  program
    .command('up')
    .description('run the embedded stack in the foreground: Temporal dev server (SQLite in GT_HOME, Web UI), worker, agent gateway.\nCtrl-C stops it; the next `gt up` resumes all work from the same file.')
    .option('--port <n>', 'Temporal gRPC port', intArg('--port'), 7233)
    .option('--ui-port <n>', 'Temporal Web UI port', intArg('--ui-port'), 8233)
    .option('--no-ui', 'run without the Web UI')
    .option('--gateway-port <n>', 'agent gateway port', intArg('--gateway-port'), 7380)
    .option('--namespace <ns>', 'Temporal namespace', process.env.TEMPORAL_NAMESPACE ?? 'default')
    .action(async (o: UpOptions) => {
      const home = gtHome();
      mkdirSync(home, { recursive: true });
      // Structured logs (GT_LOG_FORMAT / GT_LOG_LEVEL) and the Prometheus endpoint (GT_METRICS_ADDRESS), as for `gt worker`.
      installWorkerRuntime();
      const server = await startDevServer({
        dbFilename: paths.temporalDb(home),
        port: o.port,
        uiPort: o.ui ? o.uiPort : undefined,
        namespace: o.namespace,
        onProgress: (m) => console.error(m),
      });
      const client = new Client({ connection: server.env.connection, namespace: o.namespace, dataConverter: clientDataConverter() });
      const worker = await createTownWorker({
        connection: server.env.nativeConnection,
        client,
        namespace: o.namespace,
        taskQueue: taskQueue(),
        gateway: { port: o.gatewayPort },
      });
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
        await server.env.teardown();
        console.log('Gas Town stopped.');
      }
    });

  program
    .command('worker')
    .description('run a worker and agent gateway against an existing Temporal (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, profiles)')
    .option('--gateway-port <n>', 'agent gateway port (0 = any free port)', intArg('--gateway-port'), 7380)
    .option('--gateway-host <ip>', 'address the gateway binds to', '127.0.0.1')
    .action(async (o: { gatewayPort: number; gatewayHost: string }) => {
      const native = await connectNative();
      const { client, connection } = await connectClient();
      const worker = await createTownWorker({
        connection: native.connection,
        client,
        namespace: native.namespace,
        taskQueue: taskQueue(),
        gateway: { port: o.gatewayPort, host: o.gatewayHost },
      });
      console.log(`worker ${hostId()} on ${native.address} (namespace ${native.namespace}), queues ${taskQueue()} and ${worker.hostQueue}; gateway ${worker.gateway.url}`);
      try {
        await worker.run();
      } finally {
        await connection.close();
        await native.connection.close();
      }
    });
}
