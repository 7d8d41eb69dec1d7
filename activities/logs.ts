/**
 * Reading a run's output on the host that owns it (`gt logs` from any machine; see docs/operations.md).
 *
 * Invariants: the file read is always GT_HOME/runs/<run>/output.log of this host, its path derived from a run id
 * validated against RunId (never a path from the input); one answer holds at most MAX_LOG_CHUNK bytes, starting at a
 * byte offset the caller gives (so `--follow` asks only for bytes it has not seen) or, without one, the last bytes
 * of the file; the text is cut on UTF-8 character boundaries and loses terminal control sequences' control
 * characters (printableText), because an agent writes whatever it likes there and operators read it in a terminal.
 */
import { closeSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Context } from '@temporalio/activity';
import { OUTPUT_LOG } from '../agents/runtime';
import { printableText } from '../domain/caps';
import { ReadRunLogInput, type RunLogChunk } from '../domain/logs';
import { paths } from '../host/home';
import { parseActivityInput } from '../domain/validation';

const WAIT_POLL_MS = 200;

const isContinuation = (b: number) => (b & 0xc0) === 0x80;
const sequenceLength = (lead: number) => (lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1);

/**
 * Bytes [start, end) of the buffer that hold whole UTF-8 characters: continuation bytes at the start (a tail cut in
 * the middle of a character) are skipped, an incomplete character at the end is left for the next read.
 */
export function wholeCharacters(buf: Buffer): { start: number; end: number } {
  let start = 0;
  while (start < buf.length && start < 3 && isContinuation(buf[start]!)) start++;
  let end = buf.length;
  for (let i = buf.length - 1; i >= Math.max(start, buf.length - 4); i--) {
    if (isContinuation(buf[i]!)) continue;
    if (i + sequenceLength(buf[i]!) > buf.length) end = i;
    break;
  }
  return { start, end };
}

/** One bounded chunk of `file` (see the module's invariants); a missing file is an empty answer, not an error. */
export function readLogChunk(
  file: string,
  offset: number | undefined,
  maxBytes: number,
): Omit<RunLogChunk, 'runId' | 'host'> {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return { exists: false, offset: offset ?? 0, nextOffset: offset ?? 0, size: 0, text: '' };
  }
  try {
    const size = fstatSync(fd).size;
    const from = Math.min(offset ?? Math.max(0, size - maxBytes), size);
    const buf = Buffer.alloc(Math.min(maxBytes, size - from));
    const got = readSync(fd, buf, 0, buf.length, from);
    const { start, end } = wholeCharacters(buf.subarray(0, got));
    // A chunk that is all of one broken character still moves on, or a reader would ask for it forever.
    const stuck = end <= start && got >= 4;
    return {
      exists: true,
      offset: from + start,
      nextOffset: from + (stuck ? got : end),
      size,
      text: printableText(buf.subarray(start, stuck ? start : end).toString('utf8')),
    };
  } finally {
    closeSync(fd);
  }
}

export type { RunLogChunk };

export function createLogActivities(deps: { gtHome: string; hostId: string }) {
  return {
    /** A bounded chunk of the run's output on this host, waiting up to `waitMs` for bytes past `offset`. */
    async readRunLog(raw: ReadRunLogInput): Promise<RunLogChunk> {
      const input = parseActivityInput(ReadRunLogInput, raw);
      const file = join(paths.runDir(input.runId, deps.gtHome), OUTPUT_LOG);
      if (input.offset !== undefined && input.waitMs > 0) {
        const deadline = Date.now() + input.waitMs;
        const ctx = Context.current();
        while (Date.now() < deadline && sizeOf(file) <= input.offset) await ctx.sleep(WAIT_POLL_MS);
      }
      return { runId: input.runId, host: deps.hostId, ...readLogChunk(file, input.offset, input.maxBytes) };
    },
  };
}

function sizeOf(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

export type LogActivities = ReturnType<typeof createLogActivities>;
