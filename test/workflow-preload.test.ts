/**
 * zod and the town's `domain/` modules are evaluated once per workflow thread and shared by the workflows it runs
 * (workflows/preload.ts), with the module list every bundle of the town is built with (worker/worker.ts). Fails if
 * the list stops sharing them — e.g. a preload that resolves to zod's CommonJS build while workflows import its ES
 * modules, which loads both and shares neither — if a schema breaks once the SDK has frozen it (a write the preload
 * did not settle), or if the workflows import a `domain/` module the preload leaves out.
 */
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { bundleWorkflowCode, NativeConnection, Worker } from '@temporalio/worker';
import { describe, expect, inject, it } from 'vitest';
import { workflowPreloadModules, workflowsPath as townWorkflowsPath } from '../worker/worker';
import { quietLogger } from '../worker/logging';
import type { preloadProbeWorkflow } from './fixtures/preload-probe-workflow';
import { importGraph } from './helpers/import-graph';
import { temporalAddress } from './helpers/server';

const workflowsPath = fileURLToPath(new URL('./fixtures/preload-probe-workflow.ts', import.meta.url));

async function probe(preloadModules: string[]) {
  const address = temporalAddress();
  const namespace = inject('temporalNamespace');
  const taskQueue = `preload-probe-${process.pid}-${preloadModules.length}`;
  const { code } = await bundleWorkflowCode({ workflowsPath, preloadModules, logger: quietLogger });
  const native = await NativeConnection.connect({ address });
  const connection = await Connection.connect({ address });
  try {
    const worker = await Worker.create({ connection: native, namespace, taskQueue, workflowBundle: { code } });
    const client = new Client({ connection, namespace });
    const run = (n: number) =>
      client.workflow.execute<typeof preloadProbeWorkflow>('preloadProbeWorkflow', {
        taskQueue,
        workflowId: `${taskQueue}-${n}-${Date.now()}`,
      });
    // Two workflows on one worker thread: the second runs on what the first left of the shared modules.
    return await worker.runUntil(async () => [await run(1), await run(2)]);
  } finally {
    await connection.close();
    await native.close();
  }
}

/** The `domain/` modules `entry` imports, directly or not. */
async function domainModules(entry: string): Promise<string[]> {
  const { inputs } = await importGraph(entry);
  return Object.keys(inputs)
    .filter((path) => path.startsWith('domain/'))
    .sort();
}

describe('workflow bundle preload', () => {
  it("shares zod and the town's schemas between the workflows of a thread, and validation works on them", async () => {
    const results = await probe(workflowPreloadModules);
    for (const r of results) {
      expect(r.zodShared).toBe(true);
      expect(r.schemasShared).toBe(true);
      expect(r.branch).toBe('main');
      expect(r.rejected).toMatch(/repo.*(at least|>=)|branch.*A-Z a-z 0-9/s);
    }
  });

  it('without the preload each workflow builds its own zod and schemas (what the first test tells apart)', async () => {
    const results = await probe([]);
    expect(results.map((r) => [r.zodShared, r.schemasShared])).toEqual([
      [false, false],
      [false, false],
    ]);
    expect(results[1]!.rejected).toBe(results[0]!.rejected);
  });

  it('preloads every domain/ module the workflows import', async () => {
    const imported = await domainModules(townWorkflowsPath);
    expect(imported.length).toBeGreaterThan(10);
    expect(await domainModules(workflowPreloadModules[0]!)).toEqual(imported);
  });
});
