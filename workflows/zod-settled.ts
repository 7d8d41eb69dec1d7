/**
 * zod's own settings, written before anything builds a schema (workflows/preload.ts imports this first): the SDK
 * freezes the context's globals, where zod keeps them, once the preload has run. zod writes some lazily: the default
 * locale when the first schema is built, the memoizer when the first object is, and whether `new Function` works
 * when an object is first parsed (its JIT). So the JIT is off — it compiled each schema at its first parse, and a
 * workflow's schemas mostly parse once — and one schema is built and parsed here, passing and failing, so every lazy
 * setting is written before the freeze.
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
