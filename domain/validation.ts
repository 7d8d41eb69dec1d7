/**
 * Validation at every boundary, one family (zod everywhere; a rejected input changes nothing and says in one line
 * what was wrong):
 * - `parseOr`: the one parse; the caller says what a refusal is (a UserError in the CLI, an HTTP 400 in the gateway).
 * - `parseOrReject`: workflow inputs, update validators and activity inputs (`parseActivityInput`): a non-retryable
 *   ApplicationFailure of type InvalidInput.
 * - `parseOrDrop`: signals, which cannot be refused to their sender: undefined, and the problem reported.
 * - `setValidatedUpdate` (workflows/handlers.ts): an update parsed once, in its validator, and handled parsed.
 * Deterministic (no Node): workflows use it.
 */
import { ApplicationFailure } from '@temporalio/common';
import type { z } from 'zod';
import { CAPS, capText } from './caps';
import { Failure } from './failures';

export function describeZodError(error: z.ZodError): string {
  return error.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message)).join('; ');
}

/**
 * `value` parsed by `schema`, or the error `refuse` makes of the problem (one line: `describe`, by default
 * describeZodError) thrown.
 */
export function parseOr<S extends z.ZodType>(
  schema: S,
  value: unknown,
  refuse: (problem: string) => Error,
  describe: (error: z.ZodError) => string = describeZodError,
): z.output<S> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw refuse(describe(parsed.error));
  return parsed.data;
}

/** The failure that rejects a bad input: non-retryable (a bad input stays bad), saying what was wrong. */
export const invalidInput = (what: string, problem: string) =>
  ApplicationFailure.nonRetryable(`invalid ${what}: ${problem}`, Failure.InvalidInput);

/**
 * Parses a workflow/signal/update input. Throws an ApplicationFailure (never a plain Error, which would fail
 * the workflow task and retry it forever) so bad input is rejected instead of wedging the workflow.
 */
export function parseOrReject<S extends z.ZodType>(schema: S, value: unknown, what: string): z.output<S> {
  return parseOr(schema, value, (problem) => invalidInput(what, problem));
}

/** Bad activity input is a bug or a tampered payload: fail without retrying, saying what was wrong. */
export function parseActivityInput<S extends z.ZodType>(schema: S, value: unknown): z.output<S> {
  return parseOrReject(schema, value, 'activity input');
}

/** `value` parsed, or undefined with the problem handed to `dropped` (a signal cannot be refused to its sender). */
export function parseOrDrop<S extends z.ZodType>(
  schema: S,
  value: unknown,
  dropped: (problem: string) => void,
): z.output<S> | undefined {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  dropped(describeZodError(parsed.error));
  return undefined;
}

/** The innermost reason of a failure: an ActivityFailure, ChildWorkflowFailure or WorkflowFailedError only says which step failed. */
export function innermostMessage(err: unknown): string {
  let e = err as { message?: string; cause?: unknown } | undefined;
  while (e?.cause) e = e.cause;
  return String(e?.message ?? err);
}

/** The innermost reason of a failure, bounded: it travels on into results, feedback and escalations. */
export function failureMessage(err: unknown): string {
  return capText(innermostMessage(err), CAPS.failure);
}
