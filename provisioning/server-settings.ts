/**
 * Temporal server settings we apply wherever we own the server: `gt up` and `npm run demo` (embedded dev server),
 * the test suite's server, the bench, and the compose stack, which reads them from COMPOSE_DYNAMIC_CONFIG
 * (test/deployment.test.ts checks that file holds exactly TOWN_DYNAMIC_CONFIG, so compose and code cannot drift).
 *
 * The history service moves each new task of a workflow (an activity or workflow task for matching, a timer, a
 * visibility record, a callback) through one queue reader per shard and queue, each behind a token bucket of
 * `…MaxPollRPS` reads per second (default 20, burst 20). The dev server has a single shard, so past a burst of 20
 * every hand-off waits ≈ 50 ms for a token — ≈ 100 ms per activity step, most of a bead's latency. Figures and what
 * a cluster with many shards should use: docs/performance.md.
 */

/** Reads per second of each history queue reader, per shard. */
export const HISTORY_QUEUE_POLL_RPS = {
  /** Activity and workflow tasks, child starts, signals to other workflows: every hand-off of a step. */
  'history.transferProcessorMaxPollRPS': 1000,
  /** Durable timers and timeouts (rework backoff, heartbeat and start-to-close timeouts, PR polling). */
  'history.timerProcessorMaxPollRPS': 1000,
  /** Visibility records: how soon `gt … list`, the Web UI and search-attribute queries see a change. */
  'history.visibilityProcessorMaxPollRPS': 1000,
  /** Callbacks and Nexus operations (unused by the town today; kept with the others so none is the bottleneck). */
  'history.outboundProcessorMaxPollRPS': 1000,
} as const satisfies Record<string, number>;

/**
 * Activities started eagerly: when a workflow task schedules an activity on its own task queue and its worker has a
 * free activity slot, the server hands the activity task back, already started, in its answer to the workflow task's
 * completion, rather than through a transfer read and matching: one hand-off less per activity step (the refinery's
 * merges and gates, and every other activity a town workflow runs on the town's queue; not the agents' runs and
 * supervisions, which are on their hosts' queues). The SDK asks for it by default (`allowEagerDispatch`); the server
 * refuses unless this is on (default off, per namespace). An eager activity keeps its timeouts and retries: one whose
 * worker dies is retried as any other.
 */
export const EAGER_ACTIVITIES = { 'system.enableActivityEagerExecution': true } as const;

/** Everything we set in the dynamic config of a server we own: the queue readers and eager activities. */
export const TOWN_DYNAMIC_CONFIG = { ...HISTORY_QUEUE_POLL_RPS, ...EAGER_ACTIVITIES } as const;

/**
 * The dev server's search attributes kept in its cache, as a full server keeps them. `temporal server start-dev` turns
 * that cache off by default (`system.forceSearchAttributesCacheRefreshOnRead`), so that an attribute created while it
 * runs is usable at once: every read of the attributes (each upsert validated, each visibility record written, each
 * history or description sent out with its attributes) then reads them, and the namespace, from the database, under
 * a lock. In a town that was 6 % of the server's CPU (docs/performance.md). The town's attributes are written to the
 * database before the server serves (`--search-attribute`); one created by hand while it runs is usable within a
 * minute (the cache's refresh). Only for the dev server: the compose stack's server has its cache on by default.
 */
export const DEV_SERVER_DYNAMIC_CONFIG = { 'system.forceSearchAttributesCacheRefreshOnRead': false } as const;

/**
 * SQLite pragmas of a dev server on a file (`gt up`, `npm run demo`, the bench). Temporal's SQLite store leaves the
 * journal in SQLite's default rollback mode, where every commit creates, syncs and deletes a journal file beside the
 * database; in write-ahead-log mode a commit appends to one log. Every hand-off is a few commits: measured with
 * `bench/handoff.ts`, an activity step went 26 → 16 ms and a task's hand-off p50 4 → 2 ms (docs/performance.md).
 * `synchronous` stays at SQLite's default (FULL), so a commit is as durable as before: each one is synced to the log.
 * The database is then three files (`temporal.db`, `-wal`, `-shm`): copy them together, or with the server stopped.
 */
export const SQLITE_PRAGMAS = { journal_mode: 'wal' } as const satisfies Record<string, string>;

/** `temporal server start-dev` flags for the pragmas (only for a server on a file: an in-memory store has no journal). */
export function sqlitePragmaArgs(pragmas: Readonly<Record<string, string>>): string[] {
  return Object.entries(pragmas).flatMap(([key, value]) => ['--sqlite-pragma', `${key}=${value}`]);
}

/** Which settings a server runs with: ours (above), or Temporal's defaults (only to measure what ours change). */
export type ServerSettings = 'ours' | 'server-default';

export type DynamicConfig = Readonly<Record<string, number | string | boolean>>;

/** The compose stack's dynamic config file (mounted into the `temporal` service), relative to the repository. */
export const COMPOSE_DYNAMIC_CONFIG = 'deploy/temporal/dynamicconfig.yaml';

/** `temporal server start-dev` flags for `values` (values are JSON, so strings are quoted). */
export function dynamicConfigArgs(values: DynamicConfig): string[] {
  return Object.entries(values).flatMap(([key, value]) => [
    '--dynamic-config-value',
    `${key}=${JSON.stringify(value)}`,
  ]);
}
