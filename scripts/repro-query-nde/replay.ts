// usage: node --import tsx replay.ts runs/<tag>.json ; prints REPLAY OK / REPLAY FAILED: ...
import { readFileSync } from 'node:fs';
import { Worker } from '@temporalio/worker';
import type { InjectedSinks } from '@temporalio/worker';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';
import type { DbgSinks } from './workflows.js';

const historyFile = process.argv[2];
if (!historyFile) throw new Error('usage: node --import tsx replay.ts <history.json>');
const history = historyFromJSON(JSON.parse(readFileSync(historyFile, 'utf8')) as unknown);
const sinks: InjectedSinks<DbgSinks> = {
  dbg: {
    log: {
      fn: (_i, ...a) => console.log('[replay sink]', JSON.stringify(a)),
      callDuringReplay: true,
    },
  },
};
try {
  await Worker.runReplayHistory(
    { workflowsPath: new URL('./workflows.ts', import.meta.url).pathname, sinks },
    history,
    'replay',
  );
  console.log('REPLAY OK');
} catch (e: unknown) {
  const message = e instanceof Error ? e.message : String(e);
  const cause = e instanceof Error && e.cause instanceof Error ? e.cause.message : '';
  console.log('REPLAY FAILED:', message, cause);
  process.exitCode = 3;
}
