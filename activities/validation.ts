import { ApplicationFailure } from '@temporalio/common';
import type { z } from 'zod';
import { describeZodError } from '../domain/validation';
import { Failure } from '../domain/failures';

/** Bad activity input is a bug or a tampered payload: fail without retrying, saying what was wrong. */
export function parseActivityInput<S extends z.ZodType>(schema: S, value: unknown): z.output<S> {
  const parsed = schema.safeParse(value);
  if (!parsed.success)
    throw ApplicationFailure.nonRetryable(
      `invalid activity input: ${describeZodError(parsed.error)}`,
      Failure.InvalidInput,
    );
  return parsed.data;
}
