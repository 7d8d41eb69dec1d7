/** Escalations: work that needs a human. Each is a workflow (`escalation:<id>`), open until acknowledged. */
import { defineQuery, defineUpdate } from '@temporalio/workflow';
import { z } from 'zod';
import { MAX_TEXT } from './bead';
import { capText } from './caps';

export const EscalationId = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._-]{0,200}$/, 'escalation id must be a-z, 0-9, ".", "_" or "-"');

export const Severity = z.enum(['low', 'medium', 'high', 'critical']);
export type Severity = z.infer<typeof Severity>;

export const EscalationInput = z.object({
  id: EscalationId,
  severity: Severity,
  /**
   * Shortened, never refused: the reason is ours to summarize (a bead's failures, a refinery's error), and refusing
   * it would leave the work that failed without its escalation.
   */
  reason: z
    .string()
    .trim()
    .min(1)
    .transform((s) => capText(s, MAX_TEXT)),
  /** What raised it: a failed bead, an agent asking for help, a convoy, a rig's dispatch breaker. */
  source: z.enum(['bead', 'agent', 'convoy', 'rig', 'merge-request']),
  rig: z.string().optional(),
  beadId: z.string().optional(),
  convoyId: z.string().optional(),
  runId: z.string().optional(),
});
export type EscalationInput = z.input<typeof EscalationInput>;

export interface EscalationState {
  id: string;
  severity: Severity;
  reason: string;
  source: EscalationInput['source'];
  rig?: string;
  beadId?: string;
  convoyId?: string;
  runId?: string;
  status: 'open' | 'acknowledged';
  raisedAt: string;
  acknowledgedAt?: string;
  acknowledgedBy?: string;
  note?: string;
  /** What the acknowledgement did to the work behind it (`gt escalation ack --retry | --skip | --close`). */
  action?: EscalationAction;
  /** The town webhook's delivery of this escalation (absent: none configured, or raised before webhooks existed). */
  notification?: EscalationNotification;
}

export const EscalationActionKind = z.enum(['retry', 'skip', 'close']);
export type EscalationActionKind = z.infer<typeof EscalationActionKind>;
export const EscalationAction = z.object({ kind: EscalationActionKind, detail: z.string().max(2000) });
export type EscalationAction = z.infer<typeof EscalationAction>;

/**
 * How the webhook delivery went: `delivered` (a 2xx answer; `attempts` it took), `dead-letter` (every attempt
 * failed, or the receiver refused it for good: `error` says why; `gt escalations` shows it), or `not-configured`.
 */
export interface EscalationNotification {
  status: 'delivered' | 'dead-letter' | 'not-configured';
  at: string;
  attempts?: number;
  httpStatus?: number;
  error?: string;
}

export const AckRequest = z.object({
  by: z.string().max(200).default('operator'),
  note: z.string().max(MAX_TEXT).default(''),
  action: EscalationAction.optional(),
});
export type AckRequest = z.input<typeof AckRequest>;

export const escalationWorkflowId = (id: string) => `escalation:${id}`;
/** Turns any id (run ids contain '/') into an escalation id component. */
export const escalationIdPart = (s: string) => s.toLowerCase().replace(/[^a-z0-9._-]/g, '.');

export const ackEscalationUpdate = defineUpdate<EscalationState, [AckRequest]>('ack');
export const escalationStateQuery = defineQuery<EscalationState>('escalationState');

/** What the escalation workflow hands its notifier (no URL: the webhook is the worker's configuration, never a payload). */
export interface NotifyEscalationInput {
  escalation: EscalationInput;
  raisedAt: string;
}
export interface NotifyResult {
  status: 'delivered' | 'not-configured';
  attempts?: number;
  httpStatus?: number;
}
