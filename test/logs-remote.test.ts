/**
 * Issue 14 item 5: `gt logs --follow` from a machine that does not own the run. The run belongs to a real `gt worker`
 * process with its own GT_HOME and host queue; the client has another GT_HOME (none of the run's files are reachable
 * to it) and reads through Temporal only. Its output shows both parts of the agent's output as they are written,
 * without terminal control characters, and ends when the run ends.
 */
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import { readRunLog } from '../client/run-logs';
import { Town } from '../client/town';
import { paths } from '../host/home';
import { OUTPUT_LOG } from '../agents/runtime';
import { createRepo } from './helpers/repo';
import { startChild, type Child } from './helpers/processes';
import { agentScript, eventually, gtBin, runGt, workerProcessHost, type WorkerProcessHost } from './helpers/town';
import { temporalAddress } from './helpers/server';

const children: Child[] = [];
let host: WorkerProcessHost;
let connection: Connection;
let town: Town;
/** The operator's machine: same town (task queue), a GT_HOME of its own. */
let clientEnv: NodeJS.ProcessEnv;
let clientHome: string;

beforeAll(async () => {
  host = await workerProcessHost('logs', children);
  await host.start();
  clientHome = mkdtempSync(join(tmpdir(), 'gt-home-operator-'));
  clientEnv = {
    ...process.env,
    TEMPORAL_ADDRESS: temporalAddress(),
    TEMPORAL_NAMESPACE: inject('temporalNamespace'),
    GT_TASK_QUEUE: host.taskQueue,
    GT_HOME: clientHome,
    GT_HOST_ID: 'operator-laptop',
  };
  connection = await Connection.connect({ address: temporalAddress() });
  town = new Town(new Client({ connection, namespace: inject('temporalNamespace') }), host.taskQueue);
});
afterAll(async () => {
  await Promise.all(children.map((c) => c.stop('SIGKILL')));
  await connection?.close();
});

describe('gt logs from another machine', () => {
  it('follows a run owned by another worker process, through Temporal only', async () => {
    const repo = await createRepo();
    const dir = mkdtempSync(join(tmpdir(), 'gt-logs-'));
    const add = await runGt(
      ['rig', 'add', 'logs', '--repo', repo.origin, '--agent', agentScript('log-talk'), '--env', `TEST_DIR=${dir}`],
      clientEnv,
    );
    expect(add.code, add.stderr).toBe(0);
    const sling = await runGt(['sling', 'logs', 'Talk to the log', '--id', 'b-logs'], clientEnv);
    expect(sling.code, sling.stderr).toBe(0);
    await eventually(() => existsSync(join(dir, 'waiting-b-logs')), 60_000, 'the agent wrote its first part');

    const follow = startChild(gtBin, ['logs', 'b-logs', '--follow'], clientEnv);
    children.push(follow);
    await follow.waitFor(/first part of b-logs/);
    // Still running: the second part does not exist yet, so it can only come from following.
    expect(follow.output()).not.toContain('second part');
    writeFileSync(join(dir, 'release-b-logs'), '');
    await follow.waitFor(/second part of b-logs/);
    await follow.waitFor(/bead b-logs: done recorded/, 90_000);
    const code = await new Promise<number | null>((resolve) =>
      follow.proc.exitCode !== null ? resolve(follow.proc.exitCode) : follow.proc.once('exit', resolve),
    );
    expect(code, follow.output()).toBe(0);

    const out = follow.output();
    // ESC, BEL and CR never reach the operator's terminal; the text around them does, and UTF-8 is whole.
    expect(out).toContain('first part of b-logs: [31mred[0m café bell');
    // eslint-disable-next-line no-control-regex
    expect(out).not.toMatch(/[\x07\x1b\r]/);
    // Each byte once: the follow asked only for bytes past what it had printed.
    expect(out.split('first part of b-logs').length).toBe(2);
    expect(out.split('second part of b-logs').length).toBe(2);

    // The output lives on the owning host only; the operator's GT_HOME never had it.
    const runId = 'b-logs/r1/a1';
    expect(readFileSync(join(paths.runDir(runId, host.gtHome), OUTPUT_LOG), 'utf8')).toContain('second part');
    expect(existsSync(paths.runDir(runId, clientHome))).toBe(false);

    const json = await runGt(['logs', runId, '--json'], clientEnv);
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({
      runId,
      host: 'logs-host',
      offset: 0,
      output: expect.stringContaining('second part of b-logs') as string,
    });

    // One read's round trip (client → workflow on the town queue → activity on the host queue → answer), for the docs.
    const rounds = 10;
    const started = performance.now();
    for (let i = 0; i < rounds; i++) await readRunLog(town, { runId, host: 'logs-host', offset: 0, maxBytes: 4096 });
    console.log(`gt logs: one remote read takes ${((performance.now() - started) / rounds).toFixed(1)} ms on average`);
  });

  it('says so in one line when the host that would own the run has no worker', async () => {
    // Any bead id will do: the host is given, and no worker polls its queue.
    const r = await runGt(['logs', 'b-nobody/r1/a1', '--host', 'gone-host'], clientEnv, 90_000);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(
      /^gt: could not read the output of run b-nobody\/r1\/a1 on host gone-host: its worker did not pick the read up within 15 s/,
    );
  });
});
