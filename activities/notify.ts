/**
 * Escalation webhooks: one POST per escalation to the town's webhook (generic JSON with a Slack-compatible `text`).
 *
 * Invariants:
 * - The URL is the worker's configuration (TownWorkerOptions.escalationWebhook), injected here: never a workflow
 *   input, result or history entry, never in an error message (Slack-style URLs carry a token in the path).
 * - Every attempt of one escalation's delivery sends the same `Idempotency-Key` (its workflow id and run id), so a
 *   receiver that saw an attempt whose answer was lost can drop the repeat: one delivery per escalation.
 * - A 5xx, 408, 425, 429 or an unreachable receiver is retried (the escalation workflow's retry policy); any other 4xx
 *   is refused for good. Either way the escalation workflow records the outcome (a dead letter when it gave up).
 * - The text quotes what agents wrote (an escalation's reason): `<`, `>` and `&` are escaped, so an agent cannot
 *   mention `@channel` or dress a link up in Slack markup.
 */
import { ApplicationFailure } from '@temporalio/common';
import { Context } from '@temporalio/activity';
import { z } from 'zod';
import { EscalationInput, type NotifyResult } from '../domain/escalation';
import { parseActivityInput } from '../domain/validation';
import { Failure } from '../domain/failures';

export interface NotifyDeps {
  /** The town's escalation webhook; unset: escalations are not sent anywhere. */
  escalationWebhook?: string;
  /** Named in each message (several towns may share a channel). */
  town: string;
  /** One attempt's limit. */
  timeoutMs?: number;
}

const NotifyEscalationInput = z.object({ escalation: EscalationInput, raisedAt: z.string() });

const RETRYABLE_4XX = new Set([408, 425, 429]);
const MAX_TEXT_CHARS = 3000;

/** Slack's three control characters, escaped as Slack asks (https://api.slack.com/reference/surfaces/formatting). */
export const slackEscape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function webhookPayload(input: z.output<typeof NotifyEscalationInput>, town: string) {
  const e = input.escalation;
  const about = [e.rig && `rig ${e.rig}`, e.beadId && `bead ${e.beadId}`, e.convoyId && `convoy ${e.convoyId}`]
    .filter(Boolean)
    .join(', ');
  const hint = e.beadId
    ? `gt escalation ack ${e.id} --retry | --skip | --close "reason"`
    : `gt escalation ack ${e.id} --note "what was decided"`;
  const text = `[${e.severity}] escalation ${e.id} (${e.source}${about ? `; ${about}` : ''}) in town ${town}: ${e.reason}`;
  return {
    text: `${slackEscape(text).slice(0, MAX_TEXT_CHARS)}\n${slackEscape(hint)}`,
    town,
    escalation: { ...e, raisedAt: input.raisedAt },
  };
}

export function createNotifyActivities(deps: NotifyDeps) {
  return {
    /** Sends one escalation to the town's webhook; throws (to be retried, or not) unless the receiver took it. */
    async notifyEscalation(raw: z.input<typeof NotifyEscalationInput>): Promise<NotifyResult> {
      const input = parseActivityInput(NotifyEscalationInput, raw);
      if (!deps.escalationWebhook) return { status: 'not-configured' };
      const { workflowExecution, attempt, activityId } = Context.current().info;
      const key = workflowExecution ? `${workflowExecution.workflowId}/${workflowExecution.runId}` : activityId;
      let response: Response;
      try {
        response = await fetch(deps.escalationWebhook, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'idempotency-key': key,
            'user-agent': 'gastown-escalations',
          },
          body: JSON.stringify(webhookPayload(input, deps.town)),
          signal: AbortSignal.timeout(deps.timeoutMs ?? 10_000),
          redirect: 'error',
        });
      } catch (err) {
        // The cause's code (ECONNREFUSED, a timeout), never its message: that could quote the URL.
        const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
        throw ApplicationFailure.retryable(
          `the escalation webhook could not be reached (${cause})`,
          Failure.WebhookUnreachable,
        );
      }
      await response.body?.cancel().catch(() => undefined);
      if (response.ok) return { status: 'delivered', attempts: attempt, httpStatus: response.status };
      const message = `the escalation webhook answered ${response.status} ${response.statusText}`.trim();
      if (response.status >= 400 && response.status < 500 && !RETRYABLE_4XX.has(response.status))
        throw ApplicationFailure.nonRetryable(message, Failure.WebhookRefused);
      throw ApplicationFailure.retryable(message, Failure.WebhookFailed);
    },
  };
}
