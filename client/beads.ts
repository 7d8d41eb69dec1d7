/**
 * Beads across the town: `gt bead list` (from Temporal visibility, paged) and `gt bead cancel`.
 *
 * Invariants:
 * - A list reads only visibility (search attributes, memo, start and close times), never a bead's workflow: it costs
 *   one call per page however many beads there are, and a bead whose worker is gone still lists.
 * - Every query is scoped to the town's task queue (`Town.scoped`), like every other list.
 * - A cancel records who and why in the bead *before* cancelling it (an update its validator refuses once the bead is
 *   terminal), so the bead's result, its convoy's record and `gt bead status` all carry the reason.
 */
import { WorkflowNotFoundError, WorkflowUpdateFailedError, type WorkflowExecutionInfo } from '@temporalio/client';
// Not re-exported by the package: decoding a raw page is what `workflow.list` does, which hides the page token.
// The extension matters: the bundled CLI resolves it as an ES module path.
import { executionInfoFromRaw } from '@temporalio/client/lib/helpers.js';
import { z } from 'zod';
import { checkRetryable, startRetry } from '../activities/bead-retry';
import { BeadStatus, CancelBeadRequest, RetryBeadRequest, type BeadState } from '../domain/bead';

import { BeadId, ConvoyId, convoyWorkflowId, refineryWorkflowId, RigName } from '../domain/ids';
import { cancelRequestUpdate, refineryStateQuery, convoyStateQuery } from '../domain/messages';
import { SA } from '../domain/search-attributes';
import { ConvoyClient } from './convoys';
import { parseInput, UserError, type Town } from './town';

export const BeadListOptions = z.object({
  rig: RigName.optional(),
  convoy: ConvoyId.optional(),
  status: BeadStatus.optional(),
  limit: z.number().int().min(1, '--limit must be at least 1').max(1000, '--limit must be at most 1000').default(50),
  pageToken: z
    .string()
    .regex(/^[A-Za-z0-9_-]+$/, '--page-token is the token a previous page printed')
    .optional(),
  /** Every page, not only the first `limit` rows. */
  all: z.boolean().default(false),
});
export type BeadListOptions = z.input<typeof BeadListOptions>;

export interface BeadListRow {
  beadId: string;
  title: string;
  rig: string;
  convoyId?: string;
  /** The bead's status; `terminated` / `timed_out` when its workflow was ended from outside. */
  status: string;
  round?: number;
  currentRunId?: string;
  startedAt: string;
  endedAt?: string;
  /** Since the bead was slung, until it ended (or until now). */
  ageMs: number;
}

export interface BeadList {
  beads: BeadListRow[];
  /** Pass to `--page-token` for the next page; absent on the last page. */
  nextPageToken?: string;
}

const ENDED_FROM_OUTSIDE = new Set(['TERMINATED', 'TIMED_OUT']);

function beadRow(wf: WorkflowExecutionInfo, now: number): BeadListRow {
  const sa = wf.typedSearchAttributes;
  const status = ENDED_FROM_OUTSIDE.has(wf.status.name)
    ? wf.status.name.toLowerCase()
    : String(sa.get(SA.status) ?? wf.status.name.toLowerCase());
  const ended = wf.closeTime?.getTime();
  return {
    beadId: String(sa.get(SA.beadId) ?? wf.workflowId.replace(/^bead:/, '')),
    title: typeof wf.memo?.title === 'string' ? wf.memo.title : '',
    rig: String(sa.get(SA.rig) ?? ''),
    convoyId: sa.get(SA.convoyId) ?? undefined,
    status,
    round: sa.get(SA.round) ?? undefined,
    currentRunId: sa.get(SA.runId) ?? undefined,
    startedAt: wf.startTime.toISOString(),
    endedAt: wf.closeTime?.toISOString(),
    ageMs: Math.max(0, (ended ?? now) - wf.startTime.getTime()),
  };
}

/** Beads from visibility in its order (running first, then the most recently ended), one page (or every page with `all`). */
export async function listBeads(town: Town, raw: BeadListOptions = {}): Promise<BeadList> {
  const o = parseInput(BeadListOptions, raw, 'bead list options');
  const filters = [`GtKind = 'bead'`];
  // Values are slugs (validated above), so they cannot break out of the quotes.
  if (o.rig) filters.push(`GtRig = '${o.rig}'`);
  if (o.convoy) filters.push(`GtConvoyId = '${o.convoy}'`);
  if (o.status) filters.push(`GtStatus = '${o.status}'`);
  const query = town.scoped(filters.join(' AND '));
  const { namespace, loadedDataConverter } = town.client.options;
  const beads: BeadListRow[] = [];
  let token: Uint8Array | undefined = o.pageToken ? Buffer.from(o.pageToken, 'base64url') : undefined;
  const now = Date.now();
  for (;;) {
    let response;
    try {
      response = await town.client.workflowService.listWorkflowExecutions({
        namespace,
        query,
        pageSize: o.limit,
        nextPageToken: token,
      });
    } catch (err) {
      if (o.pageToken && /token/i.test((err as Error).message))
        throw new UserError('invalid --page-token: pass the token the previous page printed');
      throw err;
    }
    for (const rawInfo of response.executions)
      beads.push(beadRow(await executionInfoFromRaw(rawInfo, loadedDataConverter, rawInfo, namespace), now));
    token = response.nextPageToken?.length ? response.nextPageToken : undefined;
    if (!o.all || !token) break;
  }
  return { beads, nextPageToken: token ? Buffer.from(token).toString('base64url') : undefined };
}

export interface BeadCancellation {
  bead: BeadState;
  /** The runs this cancel stopped (their agents were stopped with the bead's supervision). */
  stoppedRuns: string[];
  /** The merge request the bead had open, and whether it left the rig's queue. */
  mergeRequest?: { mrId: string; withdrawn: boolean; note: string };
  /** The bead's convoy and how it records the bead now. */
  convoy?: { convoyId: string; beadStatus: string };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `read` until `done` holds (or `timeoutMs` passes): signals between workflows land a moment after the bead ends. */
async function settle<T>(read: () => Promise<T>, done: (v: T) => boolean, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (done(v) || Date.now() >= deadline) return v;
    await sleep(250);
  }
}

/**
 * Cancels a bead: records the reason, cancels its workflow (which stops its agent, cancels its merge request — that
 * withdraws its ticket from the refinery — and reports `cancelled` to its convoy), and waits until it has ended.
 */
export async function cancelBead(town: Town, beadId: string, raw: CancelBeadRequest = {}): Promise<BeadCancellation> {
  const req = parseInput(CancelBeadRequest, raw, 'cancel request');
  const handle = town.beadHandle(parseInput(BeadId, beadId, 'bead id'));
  let before: BeadState;
  try {
    before = await handle.executeUpdate(cancelRequestUpdate, { args: [req] });
  } catch (err) {
    if (err instanceof WorkflowUpdateFailedError) throw new UserError(err.cause?.message ?? err.message);
    if (err instanceof WorkflowNotFoundError || /not found|already completed/i.test((err as Error).message)) {
      const ended = await town.beadState(beadId);
      throw new UserError(`bead ${beadId} is already ${ended.status}: nothing to cancel`);
    }
    throw err;
  }
  const running = before.runs.filter((r) => r.outcome === 'running').map((r) => r.runId);
  const openRound = before.rounds.at(-1);
  const openMr = openRound && !openRound.outcome ? openRound.mergeRequest : undefined;
  await handle.cancel().catch((err: unknown) => {
    // It ended on its own between the update and the cancel: the state read below says how.
    if (!(err instanceof WorkflowNotFoundError) && !/not found|already completed/i.test((err as Error).message))
      throw err;
  });
  await handle.result().catch(() => undefined);
  const bead = await town.beadState(beadId);
  if (bead.status !== 'cancelled')
    throw new UserError(`bead ${beadId} ended ${bead.status} before the cancellation reached it`);

  const result: BeadCancellation = { bead, stoppedRuns: running };
  if (openMr) {
    const queue = await settle(
      () => town.client.workflow.getHandle(refineryWorkflowId(bead.rig)).query(refineryStateQuery),
      (q) => !q.queue.some((t) => t.mrId === openMr),
    );
    const merging = queue.section?.mrIds.includes(openMr) ?? false;
    const queued = queue.queue.some((t) => t.mrId === openMr);
    result.mergeRequest = {
      mrId: openMr,
      withdrawn: !merging && !queued,
      note: merging
        ? 'its merge section had already begun: it may still land'
        : queued
          ? 'still in the merge queue'
          : 'withdrawn from the merge queue',
    };
  }
  if (bead.convoyId) {
    const convoy = await settle(
      () => town.client.workflow.getHandle(convoyWorkflowId(bead.convoyId!)).query(convoyStateQuery),
      (c) => c.beads.find((b) => b.beadId === beadId)?.status !== 'running',
    );
    result.convoy = {
      convoyId: bead.convoyId,
      beadStatus: convoy.beads.find((b) => b.beadId === beadId)?.status ?? 'unknown',
    };
  }
  return result;
}

export interface BeadRetry {
  beadId: string;
  /** This retry's number (1 for the bead's first). */
  retry: number;
  fresh: boolean;
  by: string;
  note: string;
  /** How the run before it ended. */
  after: 'failed' | 'cancelled';
  /** The bead's convoy: it counts the bead running again; `reopened` when the convoy had ended and started anew. */
  convoy?: { convoyId: string; reopened: boolean };
  /** The bead's new run, once started. */
  bead: BeadState;
}

/**
 * `gt bead retry`: a new workflow run of a failed or cancelled bead (activities/bead-retry.ts says what makes that
 * safe). A convoy's bead is retried through its convoy, which counts it running before it starts (reopening the
 * convoy if it had ended), so its report and its dependents are the convoy's as before. Refused in one line, with
 * nothing changed, for an unknown, running, merged or terminated bead.
 */
export async function retryBead(town: Town, beadId: string, raw: RetryBeadRequest = {}): Promise<BeadRetry> {
  const req = parseInput(RetryBeadRequest, raw, 'retry request');
  const id = parseInput(BeadId, beadId, 'bead id');
  const check = await checkRetryable(town.client, id);
  if (!check.ok) throw new UserError(check.error);
  const { bead } = check;
  const convoyId = bead.input.convoy?.id;
  const base = { beadId: id, fresh: req.fresh, by: req.by, note: req.note, after: bead.ended };
  if (!convoyId) {
    const started = await startRetry(town.client, bead, req);
    if (!started.ok) throw new UserError(started.error);
    return { ...base, retry: started.retry, bead: await town.beadState(id) };
  }
  const { state, reopened } = await new ConvoyClient(town).recover(convoyId, { op: 'retry', ids: [id], ...req });
  const retry = state.beads.find((b) => b.beadId === id)?.retries ?? 1;
  // The convoy's loop starts the new run; answer once it has (or once the convoy recorded why it could not).
  const started = await settle(
    async () => ({
      bead: await town.beadState(id),
      record: (await town.client.workflow.getHandle(convoyWorkflowId(convoyId)).query(convoyStateQuery)).beads.find(
        (b) => b.beadId === id,
      ),
    }),
    ({ bead: b, record }) => b.retries?.at(-1)?.retry === retry || record?.status !== 'running',
    60_000,
  );
  if (started.bead.retries?.at(-1)?.retry !== retry)
    throw new UserError(
      `convoy ${convoyId} accepted the retry of ${id} but its new run has not started${started.record?.reason ? `: ${started.record.reason}` : ' yet'} (see \`gt convoy status ${convoyId}\`)`,
    );
  return { ...base, retry, convoy: { convoyId, reopened }, bead: started.bead };
}
