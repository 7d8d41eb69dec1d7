// usage: tsx driver.ts <tag>
// env: ADDR, QUERY=before|after|none|both, SIG=STOP|KILL, MAX_CACHED, STICKY_S2S (worker opts, both workers),
//      QUERY_MODE=query|describe (describe = read state via describe/memo-less alternative: skip query)
import { spawn, ChildProcess, execFileSync } from 'node:child_process';
import { writeFileSync, mkdirSync } from 'node:fs';
import { Connection, Client } from '@temporalio/client';
import { loopWorkflow, addSignal, stateQuery } from './workflows.js';

const tag = process.argv[2] ?? 'run';
const ADDR = process.env.ADDR ?? '127.0.0.1:7233';
const QUERY = process.env.QUERY ?? 'before';
const SIG = (process.env.SIG ?? 'STOP') as 'STOP' | 'KILL';
const TQ = `nde-${tag}-${Date.now()}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const t0 = Date.now();
const log = (...a: unknown[]) => console.log(`[driver +${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);

function startWorker(name: string): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', 'worker.ts', name], {
      env: { ...process.env, TQ, ADDR },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: false,
    });
    let ready = false;
    p.stdout.on('data', (d: Buffer) => {
      for (const l of d.toString().split('\n').filter(Boolean)) {
        console.log('   ', l);
        if (!ready && l.startsWith('READY')) {
          ready = true;
          resolve(p);
        }
      }
    });
    p.stderr.on('data', (d: Buffer) => process.stdout.write(`    [${name} stderr] ${d.toString()}`));
    p.on('exit', (c) => {
      if (!ready) reject(new Error(`${name} exited ${c}`));
    });
  });
}

const connection = await Connection.connect({ address: ADDR });
const client = new Client({ connection });
const wid = `loop-${tag}-${Date.now()}`;

async function doQuery(label: string) {
  const q0 = Date.now();
  try {
    const r = await Promise.race([
      client.workflow.getHandle(wid).query(stateQuery),
      sleep(60000).then(() => {
        throw new Error('client-side timeout 60s');
      }),
    ]);
    log(`query(${label}) ok in ${Date.now() - q0}ms:`, JSON.stringify(r));
  } catch (e: unknown) {
    log(`query(${label}) failed in ${Date.now() - q0}ms:`, e instanceof Error ? e.message : e);
  }
}

const A = await startWorker('A');
const h = await client.workflow.start(loopWorkflow, { taskQueue: TQ, workflowId: wid, args: [5] });
// first signal handled by A so that A owns the sticky queue and has the run cached
await h.signal(addSignal, 's0');
await sleep(2500);
const B = await startWorker('B');
await sleep(1500);
log(`SIG${SIG} worker A (pid ${A.pid})`);
process.kill(A.pid!, `SIG${SIG}`);
await sleep(300);
let qp: Promise<void> | undefined;
if (QUERY === 'pre') {
  log('query (async) before s1');
  qp = doQuery('issued before s1');
  await sleep(Number(process.env.PRE_GAP_MS ?? 2000));
}
await h.signal(addSignal, 's1');
log('signal s1');
if (qp) await qp;
if (QUERY === 'before' || QUERY === 'both') await doQuery('after s1');
await h.signal(addSignal, 's2');
log('signal s2');
await h.signal(addSignal, 's3');
log('signal s3');
if (QUERY === 'after' || QUERY === 'both') await doQuery('after s3');
// let the takeover happen, then a last signal so the workflow finishes
await sleep(Number(process.env.S4_DELAY_MS ?? 15000));
await h.signal(addSignal, 's4');
log('signal s4');
// wait for the sticky WFT to time out and B to take over and finish
const res = await Promise.race([h.result(), sleep(60000).then(() => 'TIMEOUT waiting for result')]);
log('result:', JSON.stringify(res));
if (SIG === 'STOP') {
  try {
    process.kill(A.pid!, 'SIGCONT');
  } catch {
    // A may already have exited; resuming it is best-effort cleanup
  }
}
for (const p of [A, B]) {
  try {
    process.kill(p.pid!, 'SIGKILL');
  } catch {
    // the worker may already be dead (A was killed by the scenario); nothing to clean up
  }
}
mkdirSync('runs', { recursive: true });
const file = `runs/${tag}.json`;
const cli = process.env.TEMPORAL_CLI ?? `${process.env.HOME}/.cache/gastown/temporal-cli-v1.5.1/temporal`;
writeFileSync(file, execFileSync(cli, ['workflow', 'show', '--address', ADDR, '-w', wid, '--output', 'json']));
log('history saved to', file);
await connection.close();
