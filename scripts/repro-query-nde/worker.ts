// usage: node --import tsx worker.ts <name> ; env: TQ, ADDR, MAX_CACHED (or MAX_CACHED_<name>), STICKY_S2S, LOG_LEVEL
import { NativeConnection, Worker, Runtime, DefaultLogger } from '@temporalio/worker';
import type { LogLevel, WorkerOptions, InjectedSinks } from '@temporalio/worker';
import type { DbgSinks } from './workflows.js';

const name = process.argv[2] ?? 'W';
Runtime.install({
  logger: new DefaultLogger((process.env.LOG_LEVEL as LogLevel | undefined) ?? 'WARN'),
  // CORE_DEBUG=1 prints sdk-core debug logs to stderr (e.g. "Applying new workflow task from server ... has_legacy_query")
  ...(process.env.CORE_DEBUG ? { telemetryOptions: { logging: { filter: { core: 'DEBUG', other: 'WARN' } } } } : {}),
});
const connection = await NativeConnection.connect({ address: process.env.ADDR ?? '127.0.0.1:7233' });
const sinks: InjectedSinks<DbgSinks> = {
  dbg: {
    log: {
      fn: (_i, ...a) => console.log(`[${name} sink]`, JSON.stringify(a)),
      callDuringReplay: true,
    },
  },
};
const opts: WorkerOptions = {
  connection,
  taskQueue: process.env.TQ ?? 'nde',
  identity: `${name}-${process.pid}`,
  workflowsPath: new URL('./workflows.ts', import.meta.url).pathname,
  activities: {
    // Not async: the activity only logs; returning a resolved promise keeps the Promise<void> signature.
    startBatch(items: string[]): Promise<void> {
      console.log(`[${name}] activity startBatch ${JSON.stringify(items)}`);
      return Promise.resolve();
    },
  },
  sinks,
};
const maxCached = process.env[`MAX_CACHED_${name}`] ?? process.env.MAX_CACHED; // per-worker override, e.g. MAX_CACHED_B=0
if (maxCached) opts.maxCachedWorkflows = Number(maxCached);
// e.g. STICKY_S2S=3s (ms-format duration string, passed through unchanged)
if (process.env.STICKY_S2S) opts.stickyQueueScheduleToStartTimeout = process.env.STICKY_S2S;
const worker = await Worker.create(opts);
console.log(`READY ${name} ${process.pid}`);
await worker.run();
