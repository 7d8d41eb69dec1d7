/**
 * The worker process's Runtime: structured logs that carry the town's ids, and the metrics exporter.
 *
 * Every log line of a workflow or activity names what it is about — `beadId`, `mrId`, `gtRunId` (the agent run
 * `<bead>/r<round>/a<attempt>`), `rig`, `convoyId` — derived from the workflow id and the activity's input, so an
 * operator can grep one bead's story out of many workers' logs. Settings (all optional):
 *   GT_LOG_FORMAT       json | pretty  (default: pretty on a terminal, json otherwise)
 *   GT_LOG_LEVEL        TRACE | DEBUG | INFO | WARN | ERROR  (default INFO)
 *   GT_METRICS_ADDRESS  host:port of a Prometheus `/metrics` endpoint (SDK metrics + domain/metrics.ts counters)
 */
import { IllegalStateError, type LogLevel } from '@temporalio/common';
import { DefaultLogger, Runtime, type ActivityInterceptorsFactory, type LogEntry } from '@temporalio/worker';
import { z } from 'zod';
import { RunId } from '../domain/ids';
import { parseOr } from '../domain/validation';

export const LogFormat = z.enum(['json', 'pretty']);
export type LogFormat = z.infer<typeof LogFormat>;
const Level = z.enum(['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR']);
const HostPort = z.string().regex(/^[^\s:]+:\d{1,5}$/, 'must be host:port, e.g. 0.0.0.0:9464');

export interface WorkerRuntimeSettings {
  logFormat: LogFormat;
  logLevel: LogLevel;
  metricsAddress?: string;
}

const setting = <S extends z.ZodType>(name: string, schema: S, value: string | undefined): z.output<S> | undefined => {
  if (value === undefined || value.trim() === '') return undefined;
  return parseOr(
    schema,
    value.trim(),
    (problem) => new Error(`${name}: ${problem}`),
    (error) => error.issues[0]!.message,
  );
};

export function runtimeSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): WorkerRuntimeSettings {
  return {
    logFormat: setting('GT_LOG_FORMAT', LogFormat, env.GT_LOG_FORMAT) ?? (process.stderr.isTTY ? 'pretty' : 'json'),
    logLevel: setting('GT_LOG_LEVEL', Level, env.GT_LOG_LEVEL?.toUpperCase()) ?? 'INFO',
    metricsAddress: setting('GT_METRICS_ADDRESS', HostPort, env.GT_METRICS_ADDRESS),
  };
}

/** The town ids a workflow id names: `bead:<id>`, `mr:<bead>:<round>`, `refinery:<rig>`, `convoy:<id>`. */
export function idsOfWorkflowId(workflowId: unknown): Record<string, string> {
  if (typeof workflowId !== 'string') return {};
  const [kind, first] = workflowId.split(':');
  if (!first) return {};
  if (kind === 'bead') return { beadId: first };
  if (kind === 'mr') return { mrId: workflowId, beadId: first };
  if (kind === 'refinery') return { rig: first };
  if (kind === 'convoy') return { convoyId: first };
  return {};
}

const str = (v: unknown) => (typeof v === 'string' && v ? v : undefined);
const field = (o: unknown, k: string): unknown =>
  o && typeof o === 'object' ? (o as Record<string, unknown>)[k] : undefined;

/** The town ids an activity input carries (its run, bead, merge request, rig); never any other field. */
export function idsOfActivityInput(input: unknown): Record<string, string> {
  const ids: Record<string, string> = {};
  const runId = str(field(input, 'runId'));
  if (runId && RunId.safeParse(runId).success) ids.gtRunId = runId;
  const beadId =
    str(field(input, 'beadId')) ??
    str(field(field(input, 'bead'), 'id')) ??
    str(field(field(input, 'ticket'), 'beadId'));
  if (beadId) ids.beadId = beadId;
  const mrId = str(field(input, 'mrId')) ?? str(field(field(input, 'ticket'), 'mrId'));
  if (mrId) ids.mrId = mrId;
  const rig = str(field(field(input, 'rig'), 'name')) ?? str(field(input, 'rig'));
  if (rig) ids.rig = rig;
  // A merge section works on several merge requests at once.
  const tickets = field(input, 'tickets');
  if (Array.isArray(tickets) && tickets.length) {
    const mrIds = tickets.map((t) => str(field(t, 'mrId'))).filter((id): id is string => !!id);
    if (mrIds.length === 1) ids.mrId = mrIds[0]!;
    else if (mrIds.length > 1) ids.mrIds = mrIds.join(',');
  }
  return ids;
}

/** Adds the ids of the activity's input to every log line the activity writes. */
export const activityLogIds: ActivityInterceptorsFactory = () => {
  let ids: Record<string, string> = {};
  return {
    inbound: {
      execute: (input, next) => {
        ids = idsOfActivityInput(input.args[0]);
        return next(input);
      },
    },
    outbound: { getLogAttributes: (attrs, next) => next({ ...attrs, ...ids }) },
  };
};

function enrich(meta: Record<string, unknown>): Record<string, unknown> {
  const out = { ...idsOfWorkflowId(meta.workflowId), ...meta };
  // Workflow code logs its agent run as `runId`, the same key as Temporal's execution run id: tell them apart.
  if (typeof meta.runId === 'string' && RunId.safeParse(meta.runId).success) {
    out.gtRunId = meta.runId;
    delete out.runId;
  }
  return out;
}

const jsonSafe = (_key: string, value: unknown) => {
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Error) return { name: value.name, message: value.message, stack: value.stack };
  return value;
};

export function formatLogEntry(entry: LogEntry, format: LogFormat): string {
  const time = new Date(Number(entry.timestampNanos / 1_000_000n)).toISOString();
  const meta = enrich(entry.meta ?? {});
  if (format === 'json') return JSON.stringify({ time, level: entry.level, msg: entry.message, ...meta }, jsonSafe);
  const pairs = Object.entries(meta)
    .filter(([k]) => k !== 'sdkComponent')
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v, jsonSafe)}`);
  return `${time} ${entry.level.padEnd(5)} ${entry.message}${pairs.length ? `  ${pairs.join(' ')}` : ''}`;
}

export function createTownLogger(
  settings: Pick<WorkerRuntimeSettings, 'logFormat' | 'logLevel'>,
  write = (line: string) => void process.stderr.write(`${line}\n`),
) {
  return new DefaultLogger(settings.logLevel, (entry) => write(formatLogEntry(entry, settings.logFormat)));
}

/**
 * Installs the process-wide Temporal Runtime with our logger (core logs forwarded into it) and, when asked,
 * the Prometheus endpoint. Must run before the first connection is made; returns false if something else
 * installed a Runtime first (an embedding test or tool), whose settings then stay in force.
 */
export function installWorkerRuntime(settings: WorkerRuntimeSettings = runtimeSettingsFromEnv()): boolean {
  try {
    Runtime.install({
      logger: createTownLogger(settings),
      telemetryOptions: {
        logging: {
          forward: {},
          filter: {
            core: settings.logLevel === 'TRACE' || settings.logLevel === 'DEBUG' ? settings.logLevel : 'WARN',
            other: 'ERROR',
          },
        },
        ...(settings.metricsAddress ? { metrics: prometheusExporter(settings.metricsAddress) } : {}),
      },
    });
    return true;
  } catch (err) {
    if (err instanceof IllegalStateError) return false;
    throw err;
  }
}

/** Runtime telemetry option for a Prometheus scrape endpoint (`/metrics`) at `bindAddress` (host:port). */
export function prometheusExporter(bindAddress: string, globalTags: Record<string, string> = {}) {
  return { prometheus: { bindAddress, countersTotalSuffix: true }, globalTags };
}

const noop = () => undefined;
/** For the workflow bundler where its progress is noise (tests, the bench): errors only. */
export const quietLogger = {
  trace: noop,
  debug: noop,
  info: noop,
  warn: noop,
  error: (m: string) => console.error(m),
  log: noop,
};
