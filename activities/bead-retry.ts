/**
 * Retrying a bead (`gt bead retry`, a convoy's retry, `gt escalation ack --retry`): a new workflow run of the same
 * workflow id `bead:<id>`, started only while the earlier run is closed, with what that run left carried in its input
 * (docs/operations.md, "gt bead retry").
 *
 * Invariants:
 * - Never two agents of a bead at once: Temporal runs at most one execution per workflow id, and the new run is started
 *   with `ALLOW_DUPLICATE` only once the earlier one has closed (a run that failed or was cancelled has stopped its
 *   agent before closing). Two retries racing: one start wins, the other finds the bead running.
 * - Never merged twice: a bead whose merge request merged, or is still in flight (a cancel cannot take back a merge
 *   section that began), is refused; the new run numbers its rounds after the used ones, so its run ids and merge
 *   request ids are new.
 * - Refused (nothing changed) unless the bead's workflow ended failed or cancelled: a terminated or timed-out bead
 *   ended without stopping its agent.
 * - The new run uses the rig's current configuration (an operator often fixes the rig, then retries); the bead's spec,
 *   convoy and formula come from the earlier run's own input. A bead whose formula has steps resumes at the step its
 *   run stopped at (the step records and the engine's position are carried; the loops are given back); `--fresh`
 *   starts the formula over.
 * Shared by the client (standalone beads) and the convoy's activity (its beads), so both check the same things.
 */
import { WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import { decodeFromPayloadsAtIndex } from '@temporalio/common/lib/internal-non-workflow/codec-helpers.js';
import {
  BeadWorkflowInput,
  MAX_CARRIED_INBOX,
  MAX_CARRIED_ROUNDS,
  MAX_CARRIED_RUNS,
  type BeadResume,
  type BeadResult,
  type BeadState,
  type RetryRecord,
} from '../domain/bead';
import { carriedSteps } from '../domain/formula';
import { beadWorkflowId } from '../domain/ids';
import type { MergeOutcome } from '../domain/outcomes';
import { beadStateQuery } from '../domain/messages';
import { refineryRigConfig } from './rig-config';
import type { RigConfig } from '../domain/rig';
import { beadStart } from '../domain/starts';

export interface RetryRequest {
  fresh: boolean;
  note: string;
  by: string;
}

/** A bead that may be retried: its last state and input, as its closed workflow run left them. */
export interface Retryable {
  beadId: string;
  state: BeadState;
  input: ReturnType<typeof BeadWorkflowInput.parse>;
  ended: 'failed' | 'cancelled';
  reason?: string;
  taskQueue: string;
}

export type RetryCheck = { ok: true; bead: Retryable } | { ok: false; error: string };

const isNotFound = (err: unknown) => err instanceof Error && /not found|NOT_FOUND/i.test(err.message);

/** Whether `beadId` can be retried now, and what its new run would carry; reads only (changes nothing). */
export async function checkRetryable(client: Client, beadId: string): Promise<RetryCheck> {
  const refuse = (error: string): RetryCheck => ({ ok: false, error });
  const handle = client.workflow.getHandle<() => Promise<BeadResult>>(beadWorkflowId(beadId));
  let description;
  try {
    description = await handle.describe();
  } catch (err) {
    if (isNotFound(err)) return refuse(`unknown bead '${beadId}'`);
    throw err;
  }
  const status = description.status.name;
  if (status === 'RUNNING') {
    const state = await handle.query(beadStateQuery);
    return refuse(
      `bead ${beadId} is ${state.status} (${state.waitingFor}): only a failed or cancelled bead can be retried`,
    );
  }
  if (status !== 'COMPLETED' && status !== 'CANCELLED')
    return refuse(
      `bead ${beadId} was ${status.toLowerCase().replace('_', ' ')} from outside: its agent may still run; sling a new bead instead`,
    );
  const state = await handle.query(beadStateQuery);
  let ended: 'failed' | 'cancelled' = 'cancelled';
  let reason = state.failureReason ?? state.cancellation?.reason;
  if (status === 'COMPLETED') {
    const result = await handle.result();
    if (result.status === 'closed')
      return refuse(`bead ${beadId} merged as ${result.commit ?? state.mergedCommit}: nothing to retry`);
    if (result.status !== 'failed' && result.status !== 'cancelled')
      return refuse(`bead ${beadId} ended ${result.status}: only a failed or cancelled bead can be retried`);
    ended = result.status;
    reason = result.reason ?? reason;
  }
  // A merge request that merged, or may still merge, means the work is (or may be) on the target already.
  for (const round of state.rounds) {
    if (!round.mergeRequest || (round.outcome && round.outcome.kind !== 'merged')) continue;
    const mr = client.workflow.getHandle<() => Promise<MergeOutcome>>(round.mergeRequest);
    let mrStatus = 'NONE';
    try {
      mrStatus = (await mr.describe()).status.name;
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    if (mrStatus === 'RUNNING')
      return refuse(
        `bead ${beadId}: its merge request ${round.mergeRequest} is still in flight (it may merge); retry once it has ended`,
      );
    const outcome = round.outcome ?? (mrStatus === 'COMPLETED' ? await mr.result().catch(() => undefined) : undefined);
    if (outcome?.kind === 'merged')
      return refuse(`bead ${beadId}: its merge request ${round.mergeRequest} merged; nothing to retry`);
  }
  const input = await firstInput(client, beadWorkflowId(beadId), description.runId);
  if (!input) return refuse(`bead ${beadId}: its workflow input could not be read`);
  return {
    ok: true,
    bead: { beadId, state, input, ended, reason, taskQueue: description.taskQueue },
  };
}

/** The input a workflow run was started with (the first event of its history). */
async function firstInput(client: Client, workflowId: string, runId: string) {
  const { namespace, loadedDataConverter } = client.options;
  const history = await client.workflowService.getWorkflowExecutionHistory({
    namespace,
    execution: { workflowId, runId },
    maximumPageSize: 1,
  });
  const started = history.history?.events?.[0]?.workflowExecutionStartedEventAttributes;
  if (!started) return undefined;
  const raw = await decodeFromPayloadsAtIndex(loadedDataConverter, 0, started.input?.payloads);
  const parsed = BeadWorkflowInput.safeParse(raw);
  return parsed.success ? parsed.data : undefined;
}

/** What the new run carries: bounded (domain/bead.ts BeadResume), the newest kept. */
export function resumeOf(bead: Retryable, req: RetryRequest, retry: number, now: string): BeadResume {
  const { state } = bead;
  const record: RetryRecord = {
    retry,
    by: req.by,
    note: req.note,
    fresh: req.fresh,
    at: now,
    after: bead.ended,
    ...(bead.reason ? { reason: bead.reason.slice(0, 4000) } : {}),
  };
  const retries = [...(state.retries ?? []), record].slice(-1000);
  const roundsUsed = Math.max(state.round, ...state.rounds.map((r) => r.round), bead.input.resume?.roundsUsed ?? 0);
  if (req.fresh) return { retries, roundsUsed };
  return {
    retries,
    roundsUsed,
    carried: {
      runs: state.runs.slice(-MAX_CARRIED_RUNS),
      rounds: state.rounds.slice(-MAX_CARRIED_ROUNDS),
      feedback: state.feedback.slice(-100),
      checkpoints: (state.checkpoints ?? []).slice(-50),
      inbox: (state.inbox ?? []).slice(-MAX_CARRIED_INBOX),
      // A retry is a new budget for the step that failed: its attempts (a new round) and the loops back to it.
      ...(state.formulaAt && state.steps
        ? { formula: { at: { ...state.formulaAt, loopsUsed: {} }, steps: carriedSteps(state.steps) } }
        : {}),
    },
  };
}

export type RetryStart = { ok: true; retry: number; runId: string; existing: boolean } | { ok: false; error: string };

/**
 * Starts the bead's new workflow run. `retry` is the retry's number (the convoy passes its own count, so a repeated
 * start of the same retry — an activity retried after it succeeded — finds the run it started instead of failing).
 */
export async function startRetry(
  client: Client,
  bead: Retryable,
  req: RetryRequest,
  retry = (bead.state.retries?.length ?? 0) + 1,
): Promise<RetryStart> {
  const { input } = bead;
  let rig: RigConfig;
  try {
    rig = (await refineryRigConfig(client, input.rig.name)).config;
  } catch (err) {
    if (isNotFound(err)) return { ok: false, error: `bead ${bead.beadId}: rig '${input.rig.name}' was removed` };
    throw err;
  }
  const resume = resumeOf(bead, req, retry, new Date().toISOString());
  const workflowId = beadWorkflowId(bead.beadId);
  try {
    // The spec, convoy and formula of the earlier run; the rig as it is now.
    const start = beadStart({
      taskQueue: bead.taskQueue,
      input: { bead: input.bead, rig, convoy: input.convoy, formula: input.formula, resume },
      retry,
    });
    const handle = await client.workflow.start(start.workflowType, start.options);
    return { ok: true, retry, runId: handle.firstExecutionRunId, existing: false };
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    const running = await client.workflow.getHandle(workflowId).query(beadStateQuery);
    if (running.retries?.at(-1)?.retry === retry) {
      const d = await client.workflow.getHandle(workflowId).describe();
      return { ok: true, retry, runId: d.runId, existing: true };
    }
    return {
      ok: false,
      error: `bead ${bead.beadId} is running again already (${running.status}): another retry started it`,
    };
  }
}

/** Check, then start: what a retry is, for callers that have nothing to do in between. */
export async function retryBeadRun(
  client: Client,
  beadId: string,
  req: RetryRequest,
  retry?: number,
  convoyId?: string,
): Promise<RetryStart & { bead?: Retryable }> {
  const check = await checkRetryable(client, beadId);
  if (!check.ok) {
    // The convoy's repeated start of a retry it already started: the bead is running that retry.
    if (retry !== undefined) {
      const state = await client.workflow
        .getHandle(beadWorkflowId(beadId))
        .query(beadStateQuery)
        .catch(() => undefined);
      if (state?.retries?.at(-1)?.retry === retry && !['failed', 'cancelled', 'closed'].includes(state.status))
        return { ok: true, retry, runId: '', existing: true };
    }
    return check;
  }
  if (convoyId !== undefined && check.bead.input.convoy?.id !== convoyId)
    return { ok: false, error: `bead ${beadId} does not belong to convoy ${convoyId}` };
  // …or of one whose run has even ended already (its report reached the convoy).
  if (retry !== undefined && (check.bead.state.retries?.at(-1)?.retry ?? 0) >= retry)
    return { ok: true, retry, runId: '', existing: true };
  return { ...(await startRetry(client, check.bead, req, retry)), bead: check.bead };
}
