/**
 * Evaluated once per workflow thread, before any workflow, and shared by all the workflows it runs (the SDK's
 * `preloadModules`, set for every bundle of the town in worker/worker.ts): zod, and the town's `domain/` modules the
 * workflows import. Without this, each workflow evaluated them again when it started or was replayed — the SDK gives
 * every workflow its own module scope — building every schema of the town anew, on the critical path of every bead
 * and merge request (docs/performance.md, "The fourteenth pass"). `domain/` holds no state (constants, schemas, pure
 * functions; eslint.config.mjs refuses a module-level `let`, `var` or collection there), so sharing it leaks nothing
 * from one workflow to another; test/workflow-preload.test.ts fails when the workflows import a `domain/` module this
 * list leaves out.
 *
 * Once this module has run, the SDK deep-freezes what the shared modules export (and the context's globals: zod's
 * settings, workflows/zod-settled.ts). A zod schema writes to itself after it is built, which would throw inside a
 * workflow on a frozen one; `settleSchemas` makes every such write happen here, or keeps what it writes unfrozen.
 */
import './zod-settled';
import * as bead from '../domain/bead';
import * as caps from '../domain/caps';
import * as convoy from '../domain/convoy';
import * as dag from '../domain/dag';
import * as dispatch from '../domain/dispatch';
import * as durations from '../domain/durations';
import * as escalation from '../domain/escalation';
import * as failures from '../domain/failures';
import * as forge from '../domain/forge';
import * as formula from '../domain/formula';
import * as formulaRef from '../domain/formula-ref';
import * as ids from '../domain/ids';
import * as logs from '../domain/logs';
import * as messages from '../domain/messages';
import * as metrics from '../domain/metrics';
import * as outcomes from '../domain/outcomes';
import * as progress from '../domain/progress';
import * as refinery from '../domain/refinery';
import * as rig from '../domain/rig';
import * as searchAttributes from '../domain/search-attributes';
import * as starts from '../domain/starts';
import * as taskQueues from '../domain/task-queues';
import * as validation from '../domain/validation';

/**
 * Walks what the SDK's freeze walks (the own properties of objects, not into functions), and for what zod writes:
 * - members a schema derives on first use (`shape`, `values`, `pattern`, `optin`, …: accessors on the prototypes of
 *   each schema type and of its internals, which store their result on the schema): each is read here;
 * - a first parse may rewrite the schema's own parser (zod's memoizer taking itself out of a schema that cannot
 *   recurse): every schema is parsed once here;
 * - a regular expression's `lastIndex`, which zod resets before every test of a check's pattern: the object holding
 *   one is frozen here, shallowly, which the SDK's freeze takes for done and does not descend into.
 */
function settleSchemas(value: unknown, seen = new WeakSet<object>()): void {
  if (value === null || typeof value !== 'object' || seen.has(value)) return;
  seen.add(value);
  const internals = (value as { _zod?: unknown })._zod;
  if (internals !== null && typeof internals === 'object') {
    try {
      (value as { safeParse?: (input: unknown) => unknown }).safeParse?.(undefined);
    } catch {
      // A refinement or transform that throws on this input: what mattered is that the parse began.
    }
    readDerived(value);
    readDerived(internals);
  }
  const children = Reflect.ownKeys(value).map((key) => (value as Record<PropertyKey, unknown>)[key]);
  for (const child of children) settleSchemas(child, seen);
  if (children.some((child) => child instanceof RegExp)) Object.freeze(value);
}

function readDerived(target: object): void {
  for (let proto = Object.getPrototypeOf(target) as object | null; proto && proto !== Object.prototype;) {
    for (const [key, descriptor] of Object.entries(Object.getOwnPropertyDescriptors(proto))) {
      if (descriptor.get) void (target as Record<string, unknown>)[key];
    }
    proto = Object.getPrototypeOf(proto) as object | null;
  }
}

settleSchemas([
  bead,
  caps,
  convoy,
  dag,
  dispatch,
  durations,
  escalation,
  failures,
  forge,
  formula,
  formulaRef,
  ids,
  logs,
  messages,
  metrics,
  outcomes,
  progress,
  refinery,
  rig,
  searchAttributes,
  starts,
  taskQueues,
  validation,
]);
