/**
 * Optional OpenTelemetry tracing through Temporal's official interceptors (@temporalio/interceptors-opentelemetry):
 * one trace per bead, from `RunWorkflow:beadWorkflow` through every `StartActivity:` / `RunActivity:` of its runs, and on
 * into the merge request and refinery workflows the bead's activities signal (the town's Client carries the context).
 *
 *   GT_OTEL_EXPORTER   none (default) | otlp (OTLP/HTTP, standard OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT/HEADERS) | console
 *   OTEL_SERVICE_NAME  service name on every span (gastown-worker)
 *
 * Off by default and free then: the OpenTelemetry packages are only loaded when tracing starts.
 *
 * Workflow spans come from interceptors compiled INTO the workflow bundle, so a prebuilt bundle (`npm run build:bundle`)
 * must be built with the same GT_OTEL_EXPORTER as the workers run with. The SDK does not check this (a bundle without
 * them just yields no workflow spans; one with them on an untraced worker calls a sink nobody registered on every
 * task), so `assertBundleMatchesTracing` refuses the mismatch at worker start.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { SpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { OpenTelemetryPlugin } from '@temporalio/interceptors-opentelemetry';
import type { BundlerPlugin } from '@temporalio/worker';
import { z } from 'zod';
import { parseOr } from '../domain/validation';

export const TracingSettings = z.object({
  GT_OTEL_EXPORTER: z.enum(['none', 'otlp', 'console']).default('none'),
  OTEL_SERVICE_NAME: z.string().min(1).default('gastown-worker'),
});
export type TracingSettings = z.infer<typeof TracingSettings>;

export function tracingSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): TracingSettings {
  const known = Object.fromEntries(Object.keys(TracingSettings.shape).map((k) => [k, env[k]?.trim() || undefined]));
  return parseOr(TracingSettings, known, (problem) => new Error(`invalid tracing settings: ${problem}`));
}

export interface Tracing {
  /** For Worker, Client and bundler `plugins`: the workflow, activity and client interceptors and the workflow span sink. */
  plugin: OpenTelemetryPlugin;
  /** Exports the spans still buffered; a worker calls it on shutdown so the last spans are not lost. */
  flush(): Promise<void>;
}

export interface StartTracingOptions {
  /** Where spans go (tests: a SimpleSpanProcessor over an InMemorySpanExporter). */
  spanProcessor: SpanProcessor;
  serviceName?: string;
  /** Recorded as `service.instance.id`, so spans say which host ran an agent. */
  hostId?: string;
}

let started: Tracing | undefined;

/**
 * Registers the process-wide tracer provider, W3C propagator and async context: the activity and client interceptors
 * create their spans through the global OpenTelemetry API, and an activity's span only joins its workflow's trace when
 * the context in its headers can be extracted and made current. The globals can be set once per process, hence once.
 */
export async function startTracing(options: StartTracingOptions): Promise<Tracing> {
  if (started)
    throw new Error(
      'tracing is already started in this process; pass its Tracing to every worker instead of starting it again',
    );
  const [{ OpenTelemetryPlugin }, { Resource }, { BasicTracerProvider }, { AsyncLocalStorageContextManager }, core] =
    await Promise.all([
      import('@temporalio/interceptors-opentelemetry'),
      import('@opentelemetry/resources'),
      import('@opentelemetry/sdk-trace-base'),
      import('@opentelemetry/context-async-hooks'),
      import('@opentelemetry/core'),
    ]);
  const resource = Resource.default().merge(
    new Resource({
      'service.name': options.serviceName ?? 'gastown-worker',
      ...(options.hostId ? { 'service.instance.id': options.hostId } : {}),
    }),
  );
  const provider = new BasicTracerProvider({ resource, spanProcessors: [options.spanProcessor] });
  provider.register({
    contextManager: new AsyncLocalStorageContextManager().enable(),
    propagator: new core.CompositePropagator({
      propagators: [new core.W3CTraceContextPropagator(), new core.W3CBaggagePropagator()],
    }),
  });
  started = {
    plugin: new OpenTelemetryPlugin({ resource, spanProcessor: options.spanProcessor }),
    flush: () => provider.forceFlush(),
  };
  return started;
}

/** Tracing as GT_OTEL_EXPORTER asks (undefined when off); the same Tracing for every worker of the process. */
export async function tracingFromEnv(
  env: NodeJS.ProcessEnv = process.env,
  hostId?: string,
): Promise<Tracing | undefined> {
  const settings = tracingSettingsFromEnv(env);
  if (settings.GT_OTEL_EXPORTER === 'none') return undefined;
  if (started) return started;
  const sdk = await import('@opentelemetry/sdk-trace-base');
  const spanProcessor =
    settings.GT_OTEL_EXPORTER === 'console'
      ? new sdk.SimpleSpanProcessor(new sdk.ConsoleSpanExporter())
      : new sdk.BatchSpanProcessor(new (await import('@opentelemetry/exporter-trace-otlp-http')).OTLPTraceExporter());
  return startTracing({ spanProcessor, serviceName: settings.OTEL_SERVICE_NAME, hostId });
}

/**
 * Plugins for `bundleWorkflowCode` when GT_OTEL_EXPORTER enables tracing. The bundler takes only the plugin's workflow
 * interceptor module, so no exporter is set up (and no global registered) just to build a bundle.
 */
export async function workflowBundlePlugins(env: NodeJS.ProcessEnv = process.env): Promise<BundlerPlugin[]> {
  if (tracingSettingsFromEnv(env).GT_OTEL_EXPORTER === 'none') return [];
  const [{ OpenTelemetryPlugin }, { Resource }, { NoopSpanProcessor }] = await Promise.all([
    import('@temporalio/interceptors-opentelemetry'),
    import('@opentelemetry/resources'),
    import('@opentelemetry/sdk-trace-base'),
  ]);
  return [new OpenTelemetryPlugin({ resource: Resource.empty(), spanProcessor: new NoopSpanProcessor() })];
}

/** The webpack module id of the plugin's workflow interceptors: present in a bundle exactly when it was built with them. */
const TRACED_BUNDLE_MARKER = 'interceptors-opentelemetry/lib/workflow-interceptors';

export type WorkflowBundle = { codePath: string } | { code: string };

export function bundleIsTraced(bundle: WorkflowBundle): boolean {
  if ('codePath' in bundle && !existsSync(bundle.codePath)) {
    throw new Error(
      `no workflow bundle at ${bundle.codePath}: run \`npm run build:bundle\` (or set GT_WORKFLOW_BUNDLE)`,
    );
  }
  const code = 'code' in bundle ? bundle.code : readFileSync(bundle.codePath, 'utf8');
  return code.includes(TRACED_BUNDLE_MARKER);
}

export function assertBundleMatchesTracing(bundle: WorkflowBundle, tracing: boolean): void {
  const traced = bundleIsTraced(bundle);
  if (traced === tracing) return;
  const which = 'codePath' in bundle ? `the workflow bundle ${bundle.codePath}` : 'the workflow bundle';
  throw new Error(
    tracing
      ? `${which} was built without the OpenTelemetry interceptors but this worker traces: rebuild it with tracing on (\`GT_OTEL_EXPORTER=otlp npm run build:bundle\`) or set GT_OTEL_EXPORTER=none`
      : `${which} was built with the OpenTelemetry interceptors but tracing is off on this worker: set GT_OTEL_EXPORTER (otlp or console) as for the build, or rebuild it without (\`npm run build:bundle\`)`,
  );
}
