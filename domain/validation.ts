/** Turning zod errors into one readable line, and validating at workflow boundaries without failing the task. */
import { ApplicationFailure } from '@temporalio/common';
import type { z } from 'zod';
import { CAPS, capText } from './caps';
import { Failure } from './failures';

export function describeZodError(error: z.ZodError): string {
  return error.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message)).join('; ');
}

/**
 * Parses a workflow/signal/update input. Throws an ApplicationFailure (never a plain Error, which would fail
 * the workflow task and retry it forever) so bad input is rejected instead of wedging the workflow.
 */
export function parseOrReject<S extends z.ZodType>(schema: S, value: unknown, what: string): z.output<S> {
  const parsed = schema.safeParse(value);
  if (!parsed.success)
    throw ApplicationFailure.nonRetryable(`invalid ${what}: ${describeZodError(parsed.error)}`, Failure.InvalidInput);
  return parsed.data;
}

/**
 * The innermost reason of a failure (an ActivityFailure or ChildWorkflowFailure only says which step failed),
 * bounded: it travels on into results, feedback and escalations.
 */
export function failureMessage(err: unknown): string {
  let e = err as { message?: string; cause?: unknown } | undefined;
  while (e?.cause) e = e.cause;
  return capText(String(e?.message ?? err), CAPS.failure);
}
