/**
 * escalation:<id> — something needs a human. Open (and searchable: `GtKind="escalation" AND GtStatus="open"`) until
 * an operator acknowledges it; then it completes. Raising the same escalation id twice yields one escalation.
 */
import { condition, setCurrentDetails, setHandler, upsertSearchAttributes } from '@temporalio/workflow';
import {
  ackEscalationUpdate,
  AckRequest,
  EscalationInput,
  escalationStateQuery,
  type EscalationState,
} from '../domain/escalation';
import { SA } from '../domain/search-attributes';
import { parseOrReject } from '../domain/validation';

export async function escalationWorkflow(rawInput: EscalationInput): Promise<EscalationState> {
  const input = parseOrReject(EscalationInput, rawInput, 'escalation');
  const state: EscalationState = { ...input, status: 'open', raisedAt: new Date().toISOString() };
  setHandler(escalationStateQuery, () => state);
  setHandler(
    ackEscalationUpdate,
    (raw) => {
      const ack = AckRequest.parse(raw);
      if (state.status === 'acknowledged') return state;
      Object.assign(state, {
        status: 'acknowledged',
        acknowledgedAt: new Date().toISOString(),
        acknowledgedBy: ack.by,
        note: ack.note || undefined,
      });
      return state;
    },
    { validator: (raw) => void parseOrReject(AckRequest, raw, 'acknowledgement') },
  );
  setCurrentDetails(`**${state.severity}** — ${state.reason}`);
  await condition(() => state.status === 'acknowledged');
  upsertSearchAttributes([{ key: SA.status, value: 'acknowledged' }]);
  setCurrentDetails(`acknowledged by ${state.acknowledgedBy}${state.note ? `: ${state.note}` : ''}`);
  return state;
}
