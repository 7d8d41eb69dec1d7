/** The worker's native connection to Temporal, from the same settings as every client (host/connection.ts). */
import { NativeConnection } from '@temporalio/worker';
import { connectConfig } from '../host/connection';
import { installWorkerRuntime } from './logging';

/** For worker processes: installs the Runtime (structured logs, GT_METRICS_ADDRESS) before the first native connection. */
export async function connectNative(): Promise<{ connection: NativeConnection; namespace: string; address: string }> {
  installWorkerRuntime();
  const cfg = connectConfig();
  const connection = await NativeConnection.connect(cfg.connectionOptions);
  return { connection, namespace: cfg.namespace, address: cfg.connectionOptions.address };
}
