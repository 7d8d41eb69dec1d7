/**
 * `gt logs` from any machine: a run's output is read on the host that owns it, through a short readRunLogWorkflow
 * (workflows/run-log.ts) that runs one readRunLog activity on that host's queue. The client never touches local
 * files, so it works the same beside the worker, on another host, or against a compose/cluster town.
 * Every read is bounded (MAX_LOG_CHUNK bytes); `follow` asks only for bytes past what it has printed and long-polls
 * on the host (waitMs), so an idle run costs one small workflow per MAX_LOG_WAIT_MS rather than one per second.
 */
import { randomBytes } from 'node:crypto';
import { WorkflowFailedError } from '@temporalio/client';
import { MAX_LOG_WAIT_MS, ReadRunLogRequest, type RunLogChunk } from '../domain/logs';
import { RunId } from '../domain/ids';
import { runLogReadStart } from '../domain/starts';
import { innermostMessage } from '../domain/validation';
import type { readRunLogWorkflow } from '../workflows/run-log';
import { UserError } from './errors';
import { parseInput, type Town } from './town';

/** One bounded read of a run's output on its host. */
export async function readRunLog(town: Town, request: ReadRunLogRequest): Promise<RunLogChunk> {
  const req = parseInput(ReadRunLogRequest, request, 'log read');
  try {
    // A fresh id per read (the nonce): reads are independent, and a repeated one must not be taken for the earlier read.
    const start = runLogReadStart({ taskQueue: town.queue, request: req, nonce: randomBytes(6).toString('hex') });
    return await town.client.workflow.execute<typeof readRunLogWorkflow>(start.workflowType, start.options);
  } catch (err) {
    if (err instanceof WorkflowFailedError) throw new UserError(innermostMessage(err));
    throw err;
  }
}

const beadOfRun = (runId: string) => runId.split('/')[0]!;

/** A bead id means its current run, or its last one when none is running; the host is where the run was prepared. */
export async function resolveRun(town: Town, target: string): Promise<{ runId: string; host?: string }> {
  if (RunId.safeParse(target).success) {
    const state = await town.beadState(beadOfRun(target)).catch(() => undefined);
    return { runId: target, host: state?.runs.find((r) => r.runId === target)?.host };
  }
  const state = await town.beadState(target);
  const run = state.runs.find((r) => r.runId === state.currentRunId) ?? state.runs[state.runs.length - 1];
  if (!run) throw new UserError(`bead ${target} has had no run yet (${state.status}: ${state.waitingFor})`);
  return { runId: run.runId, host: run.host };
}

/**
 * Whether the run is still running. An unknown bead has no running run; any other failure of the query (a worker
 * restarting, the server briefly away) is asked again, then reported: a follow must never end early and look done.
 */
export async function isRunning(town: Town, runId: string): Promise<boolean> {
  for (let attempt = 1; ; attempt++) {
    try {
      const state = await town.beadState(beadOfRun(runId));
      return state.runs.find((r) => r.runId === runId)?.outcome === 'running';
    } catch (err) {
      if (err instanceof UserError) return false;
      if (attempt >= 5) throw err;
      await new Promise((resolve) => setTimeout(resolve, 500 * attempt));
    }
  }
}

export interface FollowOptions {
  runId: string;
  host: string;
  /** Where to start (a byte offset); undefined = the last `tailBytes` of the output. */
  offset?: number;
  tailBytes?: number;
  follow: boolean;
  write: (text: string) => void;
  /** Said once when the first chunk starts after byte 0 (output before it not shown). */
  onSkipped?: (bytes: number) => void;
}

/**
 * Prints the run's output (its tail first), then while `follow` and the run is running, every new byte as it comes;
 * ends once the run has ended and every byte has been printed. Returns the offset reached.
 */
export async function printRunLog(town: Town, o: FollowOptions): Promise<{ offset: number; exists: boolean }> {
  const first = await readRunLog(town, { runId: o.runId, host: o.host, offset: o.offset, maxBytes: o.tailBytes });
  if (first.offset > 0) o.onSkipped?.(first.offset);
  o.write(first.text);
  let offset = first.nextOffset;
  let exists = first.exists;
  let caughtUp = first.nextOffset >= first.size;
  // Whether the last read was made after the run was seen ended: the bytes an agent writes just before it exits
  // (the answer of its `gt done`) can land after a read made while it still ran, so only such a read can end a follow.
  let readAfterEnd = false;
  while (o.follow) {
    const running = await isRunning(town, o.runId);
    // Once the run has ended the file no longer grows: read until every byte is out, then stop.
    if (!running && readAfterEnd && caughtUp) break;
    const chunk = await readRunLog(town, {
      runId: o.runId,
      host: o.host,
      offset,
      waitMs: running ? MAX_LOG_WAIT_MS / 2 : 0,
    });
    o.write(chunk.text);
    // A file that ends in a broken character never completes it: an ended run with nothing more to give is done.
    caughtUp = chunk.nextOffset >= chunk.size || (!running && chunk.nextOffset === offset);
    offset = chunk.nextOffset;
    readAfterEnd = !running;
    exists ||= chunk.exists;
  }
  return { offset, exists };
}
