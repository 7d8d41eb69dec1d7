/**
 * escalation:<id> — something needs a human. Open (and searchable: `GtKind="escalation" AND GtStatus="open"`) until
 * an operator acknowledges it; then it completes. Raising the same escalation id twice yields one escalation.
 *
 * It notifies the town's webhook once (activities/notify.ts; retried with backoff, one idempotency key for every
 * attempt); when delivery gives up, the state keeps a dead letter saying why (`gt escalations` shows it). It ends only
 * after the delivery has settled, so the record is complete. The acknowledgement records what the operator did about
 * the work behind it (retry, skip, close: client/escalations.ts does it, then acknowledges).
 */
import {
  condition,
  isCancellation,
  log,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
} from '@temporalio/workflow';
import type { TownQueueActivities } from '../activities';
import {
  ackEscalationUpdate,
  AckRequest,
  EscalationInput,
  escalationStateQuery,
  type EscalationState,
} from '../domain/escalation';
import { SA } from '../domain/search-attributes';
import { failureMessage, parseOrReject } from '../domain/validation';
import { setValidatedUpdate } from './handlers';
import { RETRY } from '../domain/failures';

/** patched() id: escalations raised from now on are sent to the town's webhook. */
const NOTIFIES_WEBHOOK = 'escalation-notifies-webhook';

const notifier = proxyActivities<TownQueueActivities>({
  startToCloseTimeout: '30s',
  // About two minutes of attempts, then a dead letter.
  retry: RETRY.webhook,
});

export async function escalationWorkflow(rawInput: EscalationInput): Promise<EscalationState> {
  const input = parseOrReject(EscalationInput, rawInput, 'escalation');
  const state: EscalationState = { ...input, status: 'open', raisedAt: new Date().toISOString() };
  setHandler(escalationStateQuery, () => state);
  setValidatedUpdate(ackEscalationUpdate, {
    schema: AckRequest,
    what: 'acknowledgement',
    handler: (ack) => {
      if (state.status === 'acknowledged') return state;
      Object.assign(state, {
        status: 'acknowledged',
        acknowledgedAt: new Date().toISOString(),
        acknowledgedBy: ack.by,
        note: ack.note || undefined,
      });
      if (ack.action) state.action = ack.action;
      return state;
    },
  });
  setCurrentDetails(`**${state.severity}** — ${state.reason}`);
  const notifying = patched(NOTIFIES_WEBHOOK)
    ? notifier.notifyEscalation({ escalation: input, raisedAt: state.raisedAt }).then(
        (r) => void (state.notification = { ...r, at: new Date().toISOString() }),
        (err: unknown) => {
          if (isCancellation(err)) throw err;
          log.warn('escalation webhook gave up', { escalationId: input.id, error: failureMessage(err) });
          state.notification = { status: 'dead-letter', at: new Date().toISOString(), error: failureMessage(err) };
        },
      )
    : undefined;
  await condition(() => state.status === 'acknowledged');
  upsertSearchAttributes([{ key: SA.status, value: 'acknowledged' }]);
  setCurrentDetails(`acknowledged by ${state.acknowledgedBy}${state.note ? `: ${state.note}` : ''}`);
  await notifying;
  return state;
}
