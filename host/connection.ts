/**
 * Connection to Temporal from the standard variables and profiles (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
 * TEMPORAL_API_KEY, TLS, TEMPORAL_PROFILE / temporal.toml) as @temporalio/envconfig reads them, so the same
 * CLI and worker talk to the embedded dev server, a cluster, or Temporal Cloud. Shared by the client and the worker
 * (which adds its native connection in worker/connection.ts).
 */
import { Client, Connection } from '@temporalio/client';
import { loadClientConnectConfig } from '@temporalio/envconfig';
import type { DataConverter } from '@temporalio/common';
import { dataConverterFromEnv } from '../codec/settings';
import { DEFAULT_TASK_QUEUE } from '../domain/task-queues';

export const DEFAULT_ADDRESS = 'localhost:7233';

export function connectConfig() {
  const cfg = loadClientConnectConfig({ profile: process.env.TEMPORAL_PROFILE });
  return {
    connectionOptions: { ...cfg.connectionOptions, address: cfg.connectionOptions.address ?? DEFAULT_ADDRESS },
    namespace: cfg.namespace ?? 'default',
  };
}

/** Payload codecs (encryption) per GT_PAYLOAD_CODEC: every Client of the town must use this to read and write payloads. */
export function clientDataConverter(): DataConverter {
  return dataConverterFromEnv();
}

export async function connectClient(): Promise<{
  client: Client;
  connection: Connection;
  address: string;
  namespace: string;
}> {
  const cfg = connectConfig();
  const address = cfg.connectionOptions.address;
  let connection: Connection;
  try {
    connection = await Connection.connect({ ...cfg.connectionOptions, connectTimeout: '5s' });
  } catch (err) {
    throw new Error(
      `cannot reach Temporal at ${address} (${(err as Error).message}). Start the embedded stack with \`gt up\`, or set TEMPORAL_ADDRESS.`,
    );
  }
  return {
    client: new Client({ connection, namespace: cfg.namespace, dataConverter: clientDataConverter() }),
    connection,
    address,
    namespace: cfg.namespace,
  };
}

/** The town's task queue (workflows and town-wide activities): GT_TASK_QUEUE, or the default. */
export const taskQueue = () => process.env.GT_TASK_QUEUE ?? DEFAULT_TASK_QUEUE;
