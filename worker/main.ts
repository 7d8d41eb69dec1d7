/**
 * Production worker entry (the Dockerfile's command): one host's town worker + agent gateway, configured only
 * from the environment, running the prebuilt workflow bundle (`npm run build:bundle`), and draining on SIGTERM:
 * the Runtime turns the signal into a worker shutdown, in-flight activities get GT_SHUTDOWN_GRACE to finish or
 * hand over (agent supervision re-attaches from its heartbeat on the next worker), then connections close.
 *
 *   TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE / TEMPORAL_API_KEY / TLS / TEMPORAL_PROFILE   where Temporal is
 *   GT_TASK_QUEUE (gastown), GT_HOST_ID (hostname), GT_HOME, GT_GATEWAY_SECRET         town identity
 *   GT_GATEWAY_HOST (0.0.0.0), GT_GATEWAY_PORT (7380), GT_GATEWAY_PUBLIC_URL           agent gateway
 *   GT_WORKFLOW_BUNDLE (dist/workflow-bundle.js), GT_SHUTDOWN_GRACE (30s)
 *   GT_LOG_FORMAT, GT_LOG_LEVEL, GT_METRICS_ADDRESS, GT_PAYLOAD_CODEC, GT_CODEC_KEY    see worker/logging.ts, codec/
 *   GT_OTEL_EXPORTER (none|otlp|console), OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_ENDPOINT  see worker/tracing.ts
 */
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { z } from 'zod';
import { taskQueue } from '../host/connection';
import { connectNative } from './connection';
import { parseOr } from '../domain/validation';
import { assertTownKeyGiven } from '../codec/settings';
import { gtHome, hostId } from '../host/home';
import { createTownWorker } from './worker';

export const defaultWorkflowBundlePath = fileURLToPath(new URL('../dist/workflow-bundle.js', import.meta.url));

const Duration = z.string().regex(/^\d+(ms|s|m|h)$/, 'must be a duration like 30s or 2m');
export const ProductionWorkerSettings = z.object({
  GT_GATEWAY_HOST: z.string().min(1).default('0.0.0.0'),
  GT_GATEWAY_PORT: z.coerce.number().int().min(0).max(65535).default(7380),
  GT_GATEWAY_PUBLIC_URL: z.url().optional(),
  GT_WORKFLOW_BUNDLE: z.string().min(1).default(defaultWorkflowBundlePath),
  GT_SHUTDOWN_GRACE: Duration.default('30s'),
});
export type ProductionWorkerSettings = z.infer<typeof ProductionWorkerSettings>;

/** The worker's settings; it refuses to start (one line) on a bad value, a missing bundle or a missing town key. */
export function productionSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): ProductionWorkerSettings {
  const known = Object.fromEntries(
    Object.keys(ProductionWorkerSettings.shape).map((k) => [k, env[k]?.trim() || undefined]),
  );
  const settings = parseOr(
    ProductionWorkerSettings,
    known,
    (problem) => new Error(`invalid worker settings: ${problem}`),
  );
  if (!existsSync(settings.GT_WORKFLOW_BUNDLE)) {
    throw new Error(
      `no workflow bundle at ${settings.GT_WORKFLOW_BUNDLE}: run \`npm run build:bundle\` (or set GT_WORKFLOW_BUNDLE)`,
    );
  }
  assertTownKeyGiven(env, env.GT_HOME ?? gtHome());
  return settings;
}

export async function runProductionWorker(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const settings = productionSettingsFromEnv(env);
  // Installs the Runtime (logs, metrics) before the first native connection.
  const native = await connectNative();
  try {
    const worker = await createTownWorker({
      connection: native.connection,
      namespace: native.namespace,
      taskQueue: taskQueue(),
      workflowBundle: { codePath: settings.GT_WORKFLOW_BUNDLE },
      gateway: {
        host: settings.GT_GATEWAY_HOST,
        port: settings.GT_GATEWAY_PORT,
        publicUrl: settings.GT_GATEWAY_PUBLIC_URL,
      },
      shutdownGraceTime: settings.GT_SHUTDOWN_GRACE,
    });
    console.log(
      `worker ${hostId()} on ${native.address} (namespace ${native.namespace}), queues ${taskQueue()} and ${worker.hostQueue}; gateway ${worker.gateway.url}`,
    );
    await worker.run();
    console.log('worker stopped');
  } finally {
    await native.connection.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await runProductionWorker().catch((err: unknown) => {
    console.error(`gt worker: ${(err as Error).message}`);
    process.exitCode = 1;
  });
}
