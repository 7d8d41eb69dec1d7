/** Signals at workflow boundaries: a signal cannot be refused to its sender, so a malformed one is logged and dropped. */
import { log } from '@temporalio/workflow';
import type { z } from 'zod';
import { describeZodError } from '../domain/validation';

/** The signal's parsed value, or undefined (and a warning naming `what`) when it does not match `schema`. */
export function parseSignal<S extends z.ZodType>(schema: S, raw: unknown, what: string): z.output<S> | undefined {
  const parsed = schema.safeParse(raw);
  if (parsed.success) return parsed.data;
  log.warn(`dropping malformed ${what}`, { error: describeZodError(parsed.error) });
  return undefined;
}
