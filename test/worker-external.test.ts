/**
 * Issue 6 acceptance: `gt worker` runs against a Temporal it did not start (the suite's server, found through
 * TEMPORAL_ADDRESS), with the production workflow bundle; a slung bead merges. The same process exposes Prometheus
 * metrics and writes structured logs that name the bead and run; the production entry drains on SIGTERM.
 */
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { z } from 'zod';
import { createRepo } from './helpers/repo';
import { freePort, startChild, type Child } from './helpers/processes';
import { agentScript, gtBin, repoRoot, runGt, tsxLoader } from './helpers/town';
import { countingActivities } from './fixtures/counting-activities';
import type { countingWorkflow } from './fixtures/counting-workflow';
import { installWorkerRuntime } from '../worker/logging';
import { temporalAddress } from './helpers/server';

const children: Child[] = [];
let bundle: string;
afterAll(async () => {
  await Promise.all(children.map((c) => c.stop('SIGKILL')));
});

const runNode = (script: string, args: string[], env: NodeJS.ProcessEnv) =>
  startChild(process.execPath, ['--import', tsxLoader, join(repoRoot, script), ...args], env);

/** Resolves with the exit code of a process expected to end by itself. */
function exitCode(child: Child, timeoutMs = 120_000): Promise<number | null> {
  if (child.proc.exitCode !== null) return Promise.resolve(child.proc.exitCode);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`process did not exit within ${timeoutMs} ms:\n${child.output()}`)),
      timeoutMs,
    );
    child.proc.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

/** A fresh town identity on the suite's server: its own task queue, GT_HOME and host id. */
function townEnv(name: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    TEMPORAL_ADDRESS: temporalAddress(),
    TEMPORAL_NAMESPACE: inject('temporalNamespace'),
    GT_TASK_QUEUE: `ext-${name}-${process.pid}`,
    GT_HOME: mkdtempSync(join(tmpdir(), `gt-${name}-`)),
    GT_HOST_ID: `host-${name}`,
    GT_WORKFLOW_BUNDLE: bundle,
    ...extra,
  };
}

beforeAll(async () => {
  bundle = join(mkdtempSync(join(tmpdir(), 'gt-bundle-')), 'workflow-bundle.js');
  const build = runNode('scripts/build-workflow-bundle.ts', [bundle], process.env);
  children.push(build);
  expect(await exitCode(build), build.output()).toBe(0);
  expect(existsSync(bundle)).toBe(true);
});

const LogLine = z.looseObject({ time: z.string(), level: z.string(), msg: z.string() });

describe('gt worker against an existing server', () => {
  it('works a bead to merge, exports Prometheus metrics, logs with bead and run ids, and stops cleanly', async () => {
    const metricsPort = await freePort();
    const env = townEnv('worker', {
      GT_METRICS_ADDRESS: `127.0.0.1:${metricsPort}`,
      GT_LOG_FORMAT: 'json',
      GT_LOG_LEVEL: 'INFO',
    });
    const worker = startChild(gtBin, ['worker', '--gateway-port', '0'], env);
    children.push(worker);
    await worker.waitFor(/gateway http:\/\/127\.0\.0\.1:\d+/);
    expect(worker.output()).toContain(`queues ${env.GT_TASK_QUEUE} and ${env.GT_TASK_QUEUE}@host-worker`);

    const repo = await createRepo();
    const add = await runGt(['rig', 'add', 'ext', '--repo', repo.origin, '--agent', agentScript('good')], env);
    expect(add.code, add.stderr).toBe(0);
    const sling = await runGt(
      ['sling', 'ext', 'Merge through an external worker', '--id', 'b-ext', '--wait', '--json'],
      env,
      90_000,
    );
    expect(sling.code, sling.stderr + worker.output()).toBe(0);
    expect(z.object({ status: z.string(), mergedCommit: z.string() }).parse(JSON.parse(sling.stdout))).toMatchObject({
      status: 'closed',
      mergedCommit: await repo.sha(),
    });

    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(metrics).toMatch(
      new RegExp(
        `temporal_workflow_completed_total\\{[^}]*task_queue="${env.GT_TASK_QUEUE}"[^}]*workflow_type="beadWorkflow"[^}]*\\} 1`,
      ),
    );
    expect(metrics).toMatch(
      /temporal_activity_execution_latency_(bucket|sum|count)\{[^}]*activity_type="superviseAgentRun"/,
    );
    // The town's own counters, counted by the real bead and refinery workflows.
    expect(metrics).toMatch(/gt_runs_started_total\{[^}]*rig="[^"]+"[^}]*\} 1/);
    expect(metrics).toMatch(/gt_merges_total\{[^}]*rig="[^"]+"[^}]*\} 1/);

    // The merge's own line, before the lines are read: output reaches this process by the worker's pipe, in its own
    // time (and, missing, the error shows the worker's whole output).
    await worker.waitFor(/"activityType":"mergeCandidate"/, 10_000);
    const logs = worker
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => LogLine.parse(JSON.parse(l)));
    expect(logs.length).toBeGreaterThan(0);
    // The bead workflow's own lines about its run, wherever they come from in the workflow code.
    expect(logs.filter((l) => l.sdkComponent === 'workflow')).toContainEqual(
      expect.objectContaining({ beadId: 'b-ext', gtRunId: 'b-ext/r1/a1', workflowId: 'bead:b-ext' }),
    );
    expect(logs.filter((l) => l.sdkComponent === 'activity')).toContainEqual(
      expect.objectContaining({ beadId: 'b-ext', gtRunId: 'b-ext/r1/a1', activityType: 'superviseAgentRun' }),
    );
    expect(logs.filter((l) => l.activityType === 'mergeCandidate')).toContainEqual(
      expect.objectContaining({ mrId: 'mr:b-ext:1', rig: 'ext' }),
    );

    expect(await worker.stop('SIGTERM')).toBe(0);
  });
});

describe('the production worker entry (worker/main.ts)', () => {
  it('refuses to start without a prebuilt bundle, saying how to build one', async () => {
    const main = runNode('worker/main.ts', [], townEnv('nobundle', { GT_WORKFLOW_BUNDLE: '/nonexistent/bundle.js' }));
    children.push(main);
    expect(await exitCode(main)).toBe(1);
    expect(main.output().trim()).toBe(
      'gt worker: no workflow bundle at /nonexistent/bundle.js: run `npm run build:bundle` (or set GT_WORKFLOW_BUNDLE)',
    );
  });

  it('starts from the environment alone and drains on SIGTERM', async () => {
    const env = townEnv('main', {
      GT_GATEWAY_HOST: '127.0.0.1',
      GT_GATEWAY_PORT: '0',
      GT_GATEWAY_PUBLIC_URL: 'http://gateway.internal:7380',
      GT_SHUTDOWN_GRACE: '2s',
      GT_LOG_FORMAT: 'json',
    });
    const main = runNode('worker/main.ts', [], env);
    children.push(main);
    await main.waitFor(/gateway http:\/\/gateway\.internal:7380/);
    expect(await main.stop('SIGTERM')).toBe(0);
    expect(main.output()).toMatch(/worker stopped/);
  });
});

describe('town counters', () => {
  it('reach the Prometheus endpoint from workflow and activity code, tagged by rig, without double counting replays', async () => {
    const metricsPort = await freePort();
    expect(
      installWorkerRuntime({ logFormat: 'json', logLevel: 'WARN', metricsAddress: `127.0.0.1:${metricsPort}` }),
    ).toBe(true);
    const address = temporalAddress();
    const namespace = inject('temporalNamespace');
    const taskQueue = `counting-${process.pid}`;
    const native = await NativeConnection.connect({ address });
    const connection = await Connection.connect({ address });
    let metrics: string;
    try {
      const worker = await Worker.create({
        connection: native,
        namespace,
        taskQueue,
        workflowsPath: fileURLToPath(new URL('./fixtures/counting-workflow.ts', import.meta.url)),
        activities: countingActivities,
        // No cache: every workflow task replays from the start, so a counter that counted replays would show 2+.
        maxCachedWorkflows: 0,
      });
      const client = new Client({ connection, namespace });
      await worker.runUntil(
        client.workflow.execute<typeof countingWorkflow>('countingWorkflow', {
          taskQueue,
          workflowId: `counting-${process.pid}`,
          args: ['rig-a'],
        }),
      );
      // Scraped while the Runtime lives: it shuts its exporter down with its last connection.
      metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    } finally {
      await connection.close();
      await native.close();
    }
    const sample = (name: string) =>
      metrics.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes('rig="rig-a"'));
    expect(sample('gt_runs_started_total'), metrics).toMatch(/ 1$/);
    expect(sample('gt_merges_total')).toMatch(/ 1$/);
    expect(sample('gt_escalations_total')).toMatch(/severity="high".* 1$/);
    expect(metrics).toMatch(/# HELP gt_merges_total merge requests merged into their target branch/);
  });
});
