/**
 * A worker frozen in the middle of a workflow task (SIGSTOP: a debugger, a frozen container, an operator's ctrl-Z, the
 * soak's pause-host fault) for longer than the SDK's default isolate execution timeout (5 s) must come back and finish
 * the task. The timeout's clock is the wall's: on SIGCONT node's watchdog terminates the task, and with the async
 * context tracking a cancellation scope turns on, node 20 then aborts the whole process ("async hook stack has become
 * corrupted", nodejs/node#38503) — the soak smoke test's host died of exactly that. The town worker's timeout
 * (worker/worker.ts) is past such pauses; the control run with the SDK's default shows the pause lands mid-task.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { bundleWorkflowCode } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startChild, type Child } from './helpers/processes';
import { tsxLoader } from './helpers/town';
import { temporalAddress } from './helpers/server';
import { quietLogger } from '../worker/logging';

const PAUSE_MS = 7_000;
const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

let bundle: string;
let client: Client;
let connection: Connection;
const children: Child[] = [];

beforeAll(async () => {
  const { code } = await bundleWorkflowCode({ workflowsPath: fixture('busy-workflow.ts'), logger: quietLogger });
  bundle = join(mkdtempSync(join(tmpdir(), 'gt-pause-')), 'busy-bundle.js');
  writeFileSync(bundle, code);
  connection = await Connection.connect({ address: temporalAddress() });
  client = new Client({ connection, namespace: inject('temporalNamespace') });
});

afterAll(async () => {
  await Promise.all(children.map((c) => c.stop('SIGKILL')));
  await connection?.close();
});

/** Loop iterations that take about `ms` here, timed on the workflow's own loop. */
function iterationsFor(ms: number): number {
  const n = 20_000_000;
  const start = performance.now();
  let acc = 0;
  for (let i = 0; i < n; i++) acc = (acc + i * 7) % 1_000_003;
  const took = Math.max(performance.now() - start, 1);
  return acc >= 0 ? Math.round((n * ms) / took) : 0;
}

/**
 * Starts a worker (`town` or `sdk-default` timeout), starts the busy workflow (≈ 3 s of computing in its first task),
 * freezes the worker a second into that task (its start in history comes before the worker's thread enters it), for
 * PAUSE_MS, and resumes it.
 */
async function pausedMidTask(timeout: 'town' | 'sdk-default') {
  const taskQueue = `pause-${timeout}-${process.pid}`;
  const worker = startChild(
    process.execPath,
    [
      '--import',
      tsxLoader,
      fixture('busy-worker.ts'),
      temporalAddress(),
      inject('temporalNamespace'),
      taskQueue,
      bundle,
      timeout,
    ],
    process.env,
  );
  children.push(worker);
  await worker.waitFor(/worker ready/);
  const handle = await client.workflow.start('busyWorkflow', {
    taskQueue,
    workflowId: `busy-${timeout}-${Date.now()}`,
    args: [iterationsFor(3_000)],
    // The server's own limit on a task (10 s by default) would otherwise time out the frozen one and retry it.
    workflowTaskTimeout: '1m',
  });
  for (;;) {
    const { events } = await handle.fetchHistory();
    if (events?.some((e) => e.workflowTaskStartedEventAttributes)) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  await new Promise((r) => setTimeout(r, 1_000));
  worker.proc.kill('SIGSTOP');
  await new Promise((r) => setTimeout(r, PAUSE_MS));
  worker.proc.kill('SIGCONT');
  return { worker, handle };
}

describe('a worker frozen in the middle of a workflow task', () => {
  it('finishes the task once resumed, with the town worker’s isolate execution timeout', async () => {
    const { worker, handle } = await pausedMidTask('town');
    const died = new Promise<never>((_, reject) =>
      worker.proc.once('exit', (code, signal) =>
        reject(new Error(`the worker died (${signal ?? code}):\n${worker.output().slice(-2_000)}`)),
      ),
    );
    expect(typeof (await Promise.race([handle.result(), died]))).toBe('number');
    const { events } = await handle.fetchHistory();
    expect(events?.filter((e) => e.workflowTaskFailedEventAttributes ?? e.workflowTaskTimedOutEventAttributes)).toEqual(
      [],
    );
    expect(worker.proc.exitCode, worker.output()).toBeNull();
    expect(worker.proc.signalCode, worker.output()).toBeNull();
  });

  it('has its task terminated by the SDK’s default timeout (the control: the pause does land mid-task)', async () => {
    const { worker } = await pausedMidTask('sdk-default');
    // node 20 aborts the process on the termination; a node without that bug fails the task instead.
    const terminated = /Script execution timed out|async hook stack has become corrupted/;
    for (let waited = 0; !terminated.test(worker.output()) && waited < 20_000; waited += 100)
      await new Promise((r) => setTimeout(r, 100));
    expect(worker.output()).toMatch(terminated);
  });
});
