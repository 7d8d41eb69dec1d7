/**
 * Reading a run's output from any machine (`gt logs`): a short readRunLogWorkflow on the town queue runs one
 * readRunLog activity on the queue of the host that owns the run (activities/logs.ts). This is the vocabulary both
 * share; every answer is bounded (MAX_LOG_CHUNK bytes) and every wait too (MAX_LOG_WAIT_MS).
 */
import { z } from 'zod';
import { RunId } from './ids';

/** Bytes one answer holds at most: far below Temporal's payload limit (2 MB), large enough for a screenful of tail. */
export const MAX_LOG_CHUNK = 256 * 1024;
/** How long one read may wait for new output before answering empty (a `--follow` long poll). */
export const MAX_LOG_WAIT_MS = 20_000;

/** A host id as hostId() makes it (fsSafe): the suffix of the host's task queue. */
export const HostId = z
  .string()
  .regex(/^[A-Za-z0-9_.-]{1,200}$/, 'host id must be 1-200 characters of A-Z, a-z, 0-9, _, . or -');

export const ReadRunLogInput = z.object({
  runId: RunId,
  /** Byte offset to read from; without it, the last `maxBytes` of the file. */
  offset: z.number().int().min(0).optional(),
  maxBytes: z.number().int().min(1).max(MAX_LOG_CHUNK).default(MAX_LOG_CHUNK),
  /** When nothing is there past `offset`, wait this long for more before answering. */
  waitMs: z.number().int().min(0).max(MAX_LOG_WAIT_MS).default(0),
});
export type ReadRunLogInput = z.input<typeof ReadRunLogInput>;

/** The workflow's input: the read, and the host whose queue serves it. */
export const ReadRunLogRequest = ReadRunLogInput.extend({ host: HostId });
export type ReadRunLogRequest = z.input<typeof ReadRunLogRequest>;

export interface RunLogChunk {
  runId: string;
  host: string;
  /** Whether the run has an output file on this host at all. */
  exists: boolean;
  /** Byte offset of the first byte of `text`. */
  offset: number;
  /** Where the next read starts: every byte before it has been returned (or skipped, when `offset` > the asked one). */
  nextOffset: number;
  /** Size of the file when it was read. */
  size: number;
  text: string;
}
