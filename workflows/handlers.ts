/**
 * Message handlers at the workflow boundary, the workflow side of domain/validation.ts:
 * - `setValidatedUpdate`: an update parsed once. Its validator parses the input (a bad one is refused with
 *   InvalidInput before anything reaches history) and runs the update's own checks on the parsed value; the handler
 *   receives that parsed value. On replay validators do not run (the update was accepted), so the handler parses the
 *   recorded input itself — still once.
 * - `parseSignal`: parse-or-drop for signals, which cannot be refused to their sender (a malformed one is logged and
 *   dropped).
 */
import type { UpdateDefinition } from '@temporalio/common';
import { log, setHandler } from '@temporalio/workflow';
import type { z } from 'zod';
import { parseOrDrop, parseOrReject } from '../domain/validation';

/** The signal's parsed value, or undefined (and a warning naming `what`) when it does not match `schema`. */
export function parseSignal<S extends z.ZodType>(schema: S, raw: unknown, what: string): z.output<S> | undefined {
  return parseOrDrop(schema, raw, (problem) => log.warn(`dropping malformed ${what}`, { error: problem }));
}

export interface ValidatedUpdate<Ret, S extends z.ZodType> {
  /** The update's input schema; `what` names the input in a refusal (`invalid <what>: …`). */
  schema: S;
  what: string;
  /**
   * Checks of the parsed input against the workflow's state (is this the current run, has the bead ended…): throw an
   * ApplicationFailure to refuse. Run by the validator only, so they see the state the update was accepted against.
   */
  check?: (input: z.output<S>) => void;
  handler: (input: z.output<S>) => Ret | Promise<Ret>;
  /** Shown with the handler (Temporal UI, `temporal workflow metadata`). */
  description?: string;
}

export function setValidatedUpdate<Ret, Arg, S extends z.ZodType>(
  update: UpdateDefinition<Ret, [Arg]>,
  spec: ValidatedUpdate<Ret, S>,
): void {
  // Keyed by the very argument object the SDK hands to the validator and then to the handler of the same update.
  const parsedByArg = new WeakMap<object, z.output<S>>();
  const isObject = (raw: unknown): raw is object => typeof raw === 'object' && raw !== null;
  setHandler(
    update,
    (raw: Arg) => {
      let input: z.output<S>;
      if (isObject(raw) && parsedByArg.has(raw)) {
        input = parsedByArg.get(raw) as z.output<S>;
        parsedByArg.delete(raw);
      } else {
        input = parseOrReject(spec.schema, raw, spec.what);
      }
      return spec.handler(input);
    },
    {
      description: spec.description,
      validator: (raw: Arg) => {
        const input = parseOrReject(spec.schema, raw, spec.what);
        spec.check?.(input);
        if (isObject(raw)) parsedByArg.set(raw, input);
      },
    },
  );
}
