/**
 * Issue 6 (observability): optional OpenTelemetry tracing through the official Temporal interceptors. A real worker
 * traces into an in-memory exporter, runs workflows bundled with the plugin, and a slung bead leaves one trace from
 * the client's start through its workflow, its agent run's activities and its merge request.
 */
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { Client, Connection } from '@temporalio/client';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';
import { bundleWorkflowCode, DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { z } from 'zod';
import { Town } from '../client/town';
import { startTracing, tracingSettingsFromEnv, workflowBundlePlugins, type Tracing } from '../worker/tracing';
import { createTownWorker, workflowBundleOptions, type TownWorker } from '../worker/worker';
import { quietLogger } from '../worker/logging';
import { startChild, type Child } from './helpers/processes';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, FAST_POLICY, repoRoot, runGt } from './helpers/town';
import { temporalAddress } from './helpers/server';

const exporter = new InMemorySpanExporter();
let tracing: Tracing;
let tracedBundle: { code: string };
let connection: Connection;
let native: NativeConnection;
let client: Client;
let worker: TownWorker;
let running: Promise<void>;
const address = temporalAddress();
const namespace = inject('temporalNamespace');
const taskQueue = `test-tracing-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;

function workerOptions() {
  return {
    connection: native,
    namespace,
    taskQueue,
    hostId: 'trace-host',
    pollIntervalMs: 200,
    shutdownGraceTime: '2s',
  };
}

beforeAll(async () => {
  Runtime.install({ logger: new DefaultLogger('WARN') });
  process.env.GT_HOME = mkdtempSync(join(tmpdir(), 'gt-home-'));
  tracing = await startTracing({
    spanProcessor: new SimpleSpanProcessor(exporter),
    serviceName: 'gastown-test',
    hostId: 'trace-host',
  });
  tracedBundle = await bundleWorkflowCode({ ...workflowBundleOptions, plugins: [tracing.plugin], logger: quietLogger });
  connection = await Connection.connect({ address });
  native = await NativeConnection.connect({ address });
  // The sling itself is traced too: the client's start is the root of the bead's trace.
  client = new Client({ connection, namespace, plugins: [tracing.plugin] });
  worker = await createTownWorker({ ...workerOptions(), workflowBundle: tracedBundle, tracing });
  running = worker.run();
}, 60_000);

const children: Child[] = [];
afterAll(async () => {
  await Promise.all(children.map((c) => c.stop('SIGKILL')));
  await worker?.shutdown();
  await running?.catch(() => undefined);
  await native?.close();
  await connection?.close();
});

const named = (spans: ReadableSpan[], name: string) => spans.filter((s) => s.name === name);
const spanId = (s: ReadableSpan) => s.spanContext().spanId;
const traceId = (s: ReadableSpan) => s.spanContext().traceId;

describe('tracing on', () => {
  it('records one trace for a slung bead: start, workflow, agent run activities, merge request', async () => {
    const repo = await createRepo();
    const town = new Town(client, taskQueue);
    await town.addRig({ name: 'traced', repo: repo.origin, agent: agentScript('good'), policy: FAST_POLICY });
    const { handle } = await town.sling('traced', { id: 'b-traced', title: 'Traced bead' });
    expect((await handle.result()).status).toBe('closed');

    // Workflow spans reach the exporter through a sink after their activation: wait for the bead's to arrive.
    const run = await eventually(
      () => exporter.getFinishedSpans().find((s) => s.name === 'RunWorkflow:beadWorkflow'),
      10_000,
      'RunWorkflow:beadWorkflow span',
    );
    const trace = exporter.getFinishedSpans().filter((s) => traceId(s) === traceId(run));
    const start = named(trace, 'StartWorkflow:beadWorkflow');
    expect(start).toHaveLength(1);
    expect(run.parentSpanId).toBe(spanId(start[0]!));
    expect(run.resource.attributes['service.name']).toBe('gastown-test');

    // The agent run: scheduled by the workflow, executed on the host queue, each execution a child of its schedule.
    for (const activity of ['launchRun', 'superviseAgentRun']) {
      const scheduled = named(trace, `StartActivity:${activity}`);
      const executed = named(trace, `RunActivity:${activity}`);
      expect(scheduled.length, activity).toBeGreaterThan(0);
      expect(executed.length, activity).toBeGreaterThan(0);
      expect(scheduled.map(spanId), activity).toContain(executed[0]!.parentSpanId);
      expect(executed[0]!.attributes.temporalWorkflowId).toBe('bead:b-traced');
    }
    expect(named(trace, 'RunActivity:superviseAgentRun')[0]!.resource.attributes['service.instance.id']).toBe(
      'trace-host',
    );

    // The merge request is a child workflow of the bead, so it continues the bead's trace.
    const mr = await eventually(
      () =>
        exporter
          .getFinishedSpans()
          .find((s) => s.name === 'RunWorkflow:mergeRequestWorkflow' && traceId(s) === traceId(run)),
      10_000,
      'merge request span',
    );
    expect(named(trace, 'StartChildWorkflow:mergeRequestWorkflow').map(spanId)).toContain(mr.parentSpanId);

    // Activities signal through the worker's own client, which carries the trace on into the refinery's queue.
    const later = exporter.getFinishedSpans().filter((s) => traceId(s) === traceId(run));
    // The ticket goes to the refinery from the run's supervision, as it publishes the branch.
    const supervisions = named(later, 'RunActivity:superviseAgentRun').map(spanId);
    const signal = named(later, 'SignalWithStartWorkflow:refineryWorkflow').find((s) =>
      supervisions.includes(s.parentSpanId!),
    );
    expect(signal, 'refinery signalled from the supervising activity').toBeDefined();
    expect(named(later, 'HandleSignal:enqueue').map((s) => s.parentSpanId)).toContain(spanId(signal!));
    // The dispatch slot, asked by update from a local activity: the gate's handler continues the bead's trace.
    const ask = named(later, 'RunActivity:requestDispatchSlot')[0]!;
    const update = named(later, 'UpdateWithStartWorkflow:requestDispatch').find((s) => s.parentSpanId === spanId(ask));
    expect(update, 'the gate asked by update from the request').toBeDefined();
    expect(named(later, 'HandleUpdate:requestDispatch').map((s) => s.parentSpanId)).toContain(spanId(update!));

    // A history made with tracing replays with it (a worker restart mid-bead is safe).
    const history = await handle.fetchHistory();
    await Worker.runReplayHistory(
      { workflowBundle: tracedBundle, plugins: [tracing.plugin] },
      history,
      'bead:b-traced',
    );
  });
});

describe('turning tracing on while workflows are running', () => {
  // Not replay-safe in SDK 1.24 for every workflow: the interceptors' async wrappers move when some commands are issued.
  // This pins which recorded history breaks, so the advice in docs/observability.md stays true (or is revisited).
  it('replays histories recorded without tracing, except those where the interceptors reorder a command around an upsert', async () => {
    const dir = join(import.meta.dirname, 'histories');
    const histories = readdirSync(dir)
      .filter((f) => f.endsWith('.json'))
      .map((f) => ({
        workflowId: f.replace(/\.json$/, ''),
        history: historyFromJSON(JSON.parse(readFileSync(join(dir, f), 'utf8'))),
      }));
    expect(histories.length).toBeGreaterThan(0);
    const failed: { workflowId: string; error: string }[] = [];
    for await (const r of Worker.runReplayHistories(
      { workflowBundle: tracedBundle, plugins: [tracing.plugin] },
      histories,
    )) {
      if (r.error) failed.push({ workflowId: r.workflowId, error: String(r.error) });
    }
    expect(failed.map((f) => f.workflowId).sort()).toEqual([
      'escalation-acknowledged',
      'refinery-batch',
      'refinery-batch-conflict',
      'refinery-speculative',
    ]);
    for (const f of failed)
      expect(f.error, f.workflowId).toMatch(
        /DeterminismViolationError.*UpsertWorkflowSearchAttributesMachine does not handle .*WorkflowExecutionUpdateCompleted/,
      );
  });
});

describe('a prebuilt bundle must match the worker', () => {
  it('refuses an untraced bundle on a traced worker', async () => {
    const err = await createTownWorker({
      ...workerOptions(),
      workflowBundle: { codePath: inject('workflowBundlePath') },
      tracing,
    }).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(
      /was built without the OpenTelemetry interceptors but this worker traces: rebuild it with tracing on/,
    );
  });

  it('refuses a traced bundle on a worker with tracing off', async () => {
    const err = await createTownWorker({ ...workerOptions(), workflowBundle: tracedBundle, tracing: null }).catch(
      (e: unknown) => e,
    );
    expect((err as Error).message).toMatch(
      /was built with the OpenTelemetry interceptors but tracing is off on this worker: set GT_OTEL_EXPORTER/,
    );
  });
});

describe('tracing settings', () => {
  it('are off unless GT_OTEL_EXPORTER says otherwise, and then the bundler gets the plugin', async () => {
    expect(tracingSettingsFromEnv({}).GT_OTEL_EXPORTER).toBe('none');
    expect(await workflowBundlePlugins({})).toEqual([]);
    expect((await workflowBundlePlugins({ GT_OTEL_EXPORTER: 'otlp' })).map((p) => p.name)).toEqual([
      'OpenTelemetryPlugin',
    ]);
  });

  it('reject an unknown exporter, naming the choices', () => {
    expect(() => tracingSettingsFromEnv({ GT_OTEL_EXPORTER: 'jaeger' })).toThrow(
      /invalid tracing settings: GT_OTEL_EXPORTER.*none.*otlp.*console/,
    );
  });
});

/** An OTLP/HTTP receiver: collects the span names of the JSON export requests the worker's exporter posts. */
async function startCollector(): Promise<{ url: string; spanNames: () => string[]; server: Server }> {
  const names: string[] = [];
  const OtlpTraces = z.object({
    resourceSpans: z.array(
      z.object({ scopeSpans: z.array(z.object({ spans: z.array(z.object({ name: z.string() })) })) }),
    ),
  });
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      if (req.url === '/v1/traces')
        for (const r of OtlpTraces.parse(JSON.parse(body)).resourceSpans)
          for (const sc of r.scopeSpans) names.push(...sc.spans.map((sp) => sp.name));
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, spanNames: () => names, server };
}

describe('the production worker (worker/main.ts) with GT_OTEL_EXPORTER', () => {
  const runMain = (env: Record<string, string>) => {
    const child = startChild(
      process.execPath,
      ['--import', join(repoRoot, 'node_modules/tsx/dist/loader.mjs'), join(repoRoot, 'worker/main.ts')],
      {
        ...process.env,
        TEMPORAL_ADDRESS: address,
        TEMPORAL_NAMESPACE: namespace,
        GT_HOME: mkdtempSync(join(tmpdir(), 'gt-otlp-')),
        GT_GATEWAY_HOST: '127.0.0.1',
        GT_GATEWAY_PORT: '0',
        GT_SHUTDOWN_GRACE: '2s',
        ...env,
      },
    );
    children.push(child);
    return child;
  };

  it('exports the spans of a bead over OTLP/HTTP and flushes them when it drains on SIGTERM', async () => {
    const collector = await startCollector();
    const bundlePath = join(mkdtempSync(join(tmpdir(), 'gt-traced-bundle-')), 'workflow-bundle.js');
    writeFileSync(bundlePath, tracedBundle.code);
    const queue = `${taskQueue}-otlp`;
    const main = runMain({
      GT_TASK_QUEUE: queue,
      GT_HOST_ID: 'otlp-host',
      GT_WORKFLOW_BUNDLE: bundlePath,
      GT_OTEL_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
    });
    await main.waitFor(/gateway http:\/\/127\.0\.0\.1:\d+/);
    const cli = { ...process.env, TEMPORAL_ADDRESS: address, TEMPORAL_NAMESPACE: namespace, GT_TASK_QUEUE: queue };
    const repo = await createRepo();
    expect((await runGt(['rig', 'add', 'otlp', '--repo', repo.origin, '--agent', agentScript('good')], cli)).code).toBe(
      0,
    );
    const sling = await runGt(['sling', 'otlp', 'Traced over OTLP', '--id', 'b-otlp', '--wait', '--json'], cli, 90_000);
    expect(sling.code, sling.stderr + main.output()).toBe(0);
    expect(await main.stop('SIGTERM')).toBe(0);
    collector.server.close();
    expect(collector.spanNames()).toEqual(
      expect.arrayContaining([
        'RunWorkflow:beadWorkflow',
        'RunActivity:superviseAgentRun',
        'RunWorkflow:mergeRequestWorkflow',
      ]),
    );
  });

  it('refuses a bundle built without tracing, saying how to fix it', async () => {
    const main = runMain({
      GT_TASK_QUEUE: `${taskQueue}-mismatch`,
      GT_WORKFLOW_BUNDLE: inject('workflowBundlePath'),
      GT_OTEL_EXPORTER: 'console',
    });
    await eventually(() => main.proc.exitCode !== null, 30_000, 'worker exit');
    expect(main.proc.exitCode).toBe(1);
    expect(main.output()).toMatch(
      /gt worker: the workflow bundle \S+ was built without the OpenTelemetry interceptors but this worker traces/,
    );
  });
});
