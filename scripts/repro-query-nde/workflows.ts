import {
  condition,
  defineQuery,
  defineSignal,
  proxyActivities,
  proxySinks,
  setHandler,
  workflowInfo,
  Sinks,
} from '@temporalio/workflow';

export interface DbgSinks extends Sinks {
  dbg: { log(...a: unknown[]): void };
}
const { dbg } = proxySinks<DbgSinks>();
const acts = proxyActivities<{ startBatch(items: string[]): Promise<void> }>({ startToCloseTimeout: '30s' });

export const addSignal = defineSignal<[string]>('add');
export const stateQuery = defineQuery<{ pending: string[]; batches: string[][]; turn: number }>('state');

// Loop: wait (with a timer) for signals, then start ONE activity with all pending items.
// How signals are grouped into activations decides how many activities are scheduled.
export async function loopWorkflow(total: number): Promise<string[][]> {
  const pending: string[] = [];
  const batches: string[][] = [];
  let seen = 0;
  let turn = 0;
  setHandler(addSignal, (x) => {
    pending.push(x);
    seen++;
  });
  setHandler(stateQuery, () => {
    dbg.log('QUERY', {
      replaying: workflowInfo().unsafe.isReplaying,
      historyLength: workflowInfo().historyLength,
      pending: [...pending],
      batches,
      turn,
    });
    return { pending: [...pending], batches, turn };
  });
  while (seen < total || pending.length > 0) {
    turn++;
    await condition(() => pending.length > 0, '1 hour'); // timer, cancelled when a signal arrives
    if (pending.length === 0) continue;
    const batch = pending.splice(0);
    batches.push(batch);
    dbg.log('TURN', {
      turn,
      batch,
      replaying: workflowInfo().unsafe.isReplaying,
      historyLength: workflowInfo().historyLength,
    });
    await acts.startBatch(batch);
  }
  return batches;
}
