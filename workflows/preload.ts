/**
 * Evaluated once per workflow thread, before any workflow, and shared by all the workflows it runs (the SDK's
 * `preloadModules`, set for every bundle of the town in worker/worker.ts): zod. Without this, each workflow evaluated
 * zod's modules again when it started or was replayed — the SDK gives every workflow its own module scope — which was
 * about half of a new workflow's module set-up, on the critical path of every bead and merge request
 * (docs/performance.md). Only zod is shared: the town's own schemas stay per workflow.
 *
 * Once this module has run, the SDK freezes what shared modules export and the context's globals, where zod keeps its
 * settings. zod writes some of them lazily: the default locale when the first schema is built, the memoizer when the
 * first object is, and whether `new Function` works when an object is first parsed (its JIT). Each of those writes
 * would throw inside a workflow after the freeze. So the JIT is off — it compiled each schema at its first parse,
 * and the town's schemas are built anew per workflow and mostly parse once — and one schema is built and parsed here,
 * passing and failing, so every lazy setting is written before the freeze. test/workflow-preload.test.ts holds this.
 */
import { z } from 'zod';

z.config({ jitless: true });
const settle = z
  .object({
    n: z.number().int().min(1),
    s: z.string().trim().regex(/^a/).optional(),
    e: z.array(z.enum(['a'])).default([]),
    u: z.discriminatedUnion('k', [z.object({ k: z.literal('x') }), z.object({ k: z.literal('y') })]).optional(),
  })
  .refine((v) => v.n < 10, 'small');
settle.safeParse({ n: 1, s: 'a', u: { k: 'x' } });
settle.safeParse({ n: 0, s: 'b', e: ['c'], u: { k: 'z' } });
