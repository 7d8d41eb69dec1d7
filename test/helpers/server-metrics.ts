/** What a Temporal dev server of our own says it did, read from its Prometheus endpoint. */
import { fileURLToPath } from 'node:url';
import { Worker } from '@temporalio/worker';
import { expect } from 'vitest';
import { startDevServer, type DevServer } from '../../provisioning/dev-server';
import { listenersOf } from '../../provisioning/proc';
import type { ServerSettings } from '../../provisioning/server-settings';

/**
 * A dev server of our own CLI started with `settings` (its pid is what `scrape` reads), and a worker of the bench's
 * hand-off workflows (bench/handoff-workflow.ts, nothing of Gas Town in them) with no-op activities on `taskQueue`.
 */
export async function serverWithHandoffWorker(
  settings: ServerSettings,
  taskQueue: string,
): Promise<{ server: DevServer; pid: number; worker: Worker }> {
  const server = await startDevServer({ settings });
  const { env, pid, namespace } = server;
  expect(pid, 'a dev server of our own CLI (npm run provision)').toBeDefined();
  const worker = await Worker.create({
    connection: env.nativeConnection,
    namespace,
    taskQueue,
    workflowsPath: fileURLToPath(new URL('../../bench/handoff-workflow.ts', import.meta.url)),
    activities: { noop: async () => {} },
  });
  return { server, pid: pid!, worker };
}

/** The server's Prometheus endpoint: the one of its listening ports that answers `/metrics`. */
export async function scrape(pid: number): Promise<string> {
  for (const { ip, port } of listenersOf(pid)) {
    const text = await fetch(`http://${ip}:${port}/metrics`)
      .then((r) => (r.ok ? r.text() : ''))
      .catch(() => '');
    if (text.includes('# TYPE')) return text;
  }
  throw new Error(`no listening port of the server (pid ${pid}) answers /metrics`);
}

/** The sum of a counter's series for one task queue (its label has `_` for `-`), and of one workflow type when given. */
export function counter(metrics: string, name: string, taskQueue: string, workflowType?: string): number {
  return metrics
    .split('\n')
    .filter(
      (line) =>
        line.startsWith(`${name}{`) &&
        line.includes(`taskqueue="${taskQueue.replaceAll('-', '_')}"`) &&
        (!workflowType || line.includes(`workflowType="${workflowType}"`)),
    )
    .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(' ') + 1)), 0);
}

/** The sum of a counter's series whose labels include every one given (e.g. `{ operation: 'GetNamespace' }`). */
export function counterWith(metrics: string, name: string, labels: Readonly<Record<string, string>>): number {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  return metrics
    .split('\n')
    .filter((line) => line.startsWith(`${name}{`) && wanted.every((l) => line.includes(l)))
    .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(' ') + 1)), 0);
}
