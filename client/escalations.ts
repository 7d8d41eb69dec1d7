/**
 * `gt escalation ack <id> [--retry | --skip | --close "reason"]`: acknowledging an escalation, and acting on the
 * bead or convoy behind it first.
 *
 * Invariants:
 * - The action runs before the acknowledgement, and a refused action (one line, exit 1) acknowledges nothing.
 * - An escalation already acknowledged takes no action again (a repeated `--retry` must not retry twice).
 * - `--retry` is `gt bead retry` of the escalation's bead (or, for a convoy's failed landing, `gt convoy land`);
 *   `--skip` is the bead's convoy skipping it (it counts as done, its dependents start, nothing of it merges);
 *   `--close` ends the work for good: the convoy is closed with the reason, a standalone bead still running is
 *   cancelled; failed work is left as it is. The escalation records what was done (`action`).
 */
import { WorkflowNotFoundError } from '@temporalio/client';
import { z } from 'zod';
import {
  EscalationActionKind,
  EscalationId,
  escalationStateQuery,
  escalationWorkflowId,
  type EscalationAction,
  type EscalationState,
} from '../domain/escalation';
import { convoyWorkflowId } from '../domain/ids';
import { cancelBead, retryBead, type BeadRetry } from './beads';
import { ConvoyClient } from './convoys';
import { parseInput, UserError, type Town } from './town';

export const EscalationAck = z.object({
  by: z.string().trim().min(1).max(200).default('operator'),
  note: z.string().max(20_000).default(''),
  action: EscalationActionKind.optional(),
  /** --close's reason (also the note when no note is given). */
  reason: z.string().trim().max(2000, 'reason must be at most 2000 characters').optional(),
  /** --retry --fresh: the retried bead starts without what its earlier runs left. */
  fresh: z.boolean().default(false),
});
export type EscalationAck = z.input<typeof EscalationAck>;

export interface EscalationAckResult {
  escalation: EscalationState;
  action?: EscalationAction;
  /** --retry of a bead: what `gt bead retry` answered. */
  retry?: BeadRetry;
}

export async function ackEscalation(town: Town, id: string, raw: EscalationAck = {}): Promise<EscalationAckResult> {
  const ack = parseInput(EscalationAck, raw, 'acknowledgement');
  const escalationId = parseInput(EscalationId, id, 'escalation id');
  if (ack.action === 'close' && !ack.reason) throw new UserError('--close needs a reason: --close "why"');
  if (!ack.action) return { escalation: await town.ackEscalation(escalationId, { by: ack.by, note: ack.note }) };

  const e = await town.client.workflow
    .getHandle(escalationWorkflowId(escalationId))
    .query(escalationStateQuery)
    .catch((err: unknown) => {
      if (err instanceof WorkflowNotFoundError || /not found/i.test((err as Error).message))
        throw new UserError(`unknown escalation '${escalationId}' (see \`gt escalations\`)`);
      throw err;
    });
  if (e.status === 'acknowledged')
    throw new UserError(
      `escalation ${escalationId} was already acknowledged by ${e.acknowledgedBy ?? 'someone'}${e.action ? ` (${e.action.kind}: ${e.action.detail})` : ''}; nothing done`,
    );
  const convoys = new ConvoyClient(town);
  let action: EscalationAction;
  let retry: BeadRetry | undefined;
  if (ack.action === 'retry') {
    if (e.beadId) {
      retry = await retryBead(town, e.beadId, { by: ack.by, note: ack.note, fresh: ack.fresh });
      action = {
        kind: 'retry',
        detail: `bead ${e.beadId} retried (retry ${retry.retry})${retry.convoy?.reopened ? `; convoy ${retry.convoy.convoyId} reopened` : ''}`,
      };
    } else if (e.convoyId && e.id.includes('.landing.')) {
      await convoys.retryLanding(e.convoyId);
      action = { kind: 'retry', detail: `landing of convoy ${e.convoyId} retried` };
    } else
      throw new UserError(`escalation ${escalationId} names no bead or landing to retry; acknowledge it with --note`);
  } else if (ack.action === 'skip') {
    if (!e.beadId || !e.convoyId)
      throw new UserError(
        `escalation ${escalationId} names no bead of a convoy: --skip lets a convoy go on without a bead (use --close or --retry)`,
      );
    const reason = ack.reason || ack.note || `skipped from escalation ${escalationId}`;
    const { reopened } = await convoys.recover(e.convoyId, { op: 'skip', ids: [e.beadId], reason, by: ack.by });
    action = {
      kind: 'skip',
      detail: `convoy ${e.convoyId} skips bead ${e.beadId}${reopened ? ' (convoy reopened)' : ''}`,
    };
  } else {
    action = { kind: 'close', detail: await closeBehind(town, convoys, e, ack.reason!, ack.by) };
  }
  const escalation = await town.ackEscalation(escalationId, {
    by: ack.by,
    note: ack.note || ack.reason || action.detail,
    action: { kind: action.kind, detail: action.detail.slice(0, 2000) },
  });
  return { escalation, action, retry };
}

/** --close: the convoy is closed with the reason; a standalone bead still running is cancelled; ended work stays. */
async function closeBehind(
  town: Town,
  convoys: ConvoyClient,
  e: EscalationState,
  reason: string,
  by: string,
): Promise<string> {
  if (e.convoyId) {
    const d = await town.client.workflow
      .getHandle(convoyWorkflowId(e.convoyId))
      .describe()
      .catch(() => undefined);
    if (d?.status.name !== 'RUNNING') return `convoy ${e.convoyId} had already ended; closed: ${reason}`;
    const state = await convoys.close(e.convoyId, { reason: `${reason} (by ${by})` });
    return `convoy ${e.convoyId} ${state.status}: ${reason}`;
  }
  if (e.beadId) {
    const d = await town
      .beadHandle(e.beadId)
      .describe()
      .catch(() => undefined);
    if (d?.status.name !== 'RUNNING') return `bead ${e.beadId} had already ended; closed: ${reason}`;
    await cancelBead(town, e.beadId, { reason, by });
    return `bead ${e.beadId} cancelled: ${reason}`;
  }
  return `closed: ${reason}`;
}
