/**
 * `gt up` is the embedded stack in the foreground: stopping it mid-run — by Ctrl-C or kill -9 — and starting it again
 * (same GT_HOME, same SQLite file) resumes the work: the running agent is re-attached (never relaunched) and the bead
 * merges exactly once. Its dev server is its own: it dies with `gt up`, a leftover of an earlier one is stopped, a taken
 * port or a second `gt up` is refused in one line, a dead server stops `gt up` with the reason. The server runs the
 * town's settings (read back from the process that holds the port) and listens on loopback only.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { z } from 'zod';
import { commandLine, listenersOf, tcpListeners } from '../provisioning/proc';
import { DEV_SERVER_DYNAMIC_CONFIG, SQLITE_PRAGMAS, TOWN_DYNAMIC_CONFIG } from '../provisioning/server-settings';
import { resolveTemporalCli } from '../provisioning/temporal-cli';
import { processExists } from './helpers/pids';
import { createRepo } from './helpers/repo';
import { freePort, startChild, type Child } from './helpers/processes';
import { agentScript, eventually, gtBin, runGt } from './helpers/town';

const children: Child[] = [];
afterAll(async () => {
  await Promise.all(children.map((c) => c.stop('SIGKILL')));
});

const BeadJson = z.object({
  status: z.string(),
  runs: z.array(z.object({ runId: z.string(), outcome: z.string() })),
  mergedCommit: z.string().optional(),
});
const ServerRecord = z.object({ pid: z.number(), ownerPid: z.number() });
const serverRecord = (home: string) => ServerRecord.parse(JSON.parse(readFileSync(join(home, 'temporal.pid'), 'utf8')));

/** A scratch GT_HOME and ports; `up()` starts `gt up` on them (the prebuilt workflow bundle keeps starts short). */
async function upFixture(extraArgs: string[] = ['--no-ui']) {
  const home = mkdtempSync(join(tmpdir(), 'gt-up-home-'));
  const testDir = mkdtempSync(join(tmpdir(), 'gt-up-test-'));
  const [port, gatewayPort] = [await freePort(), await freePort()];
  const env = {
    ...process.env,
    GT_HOME: home,
    TEMPORAL_ADDRESS: `127.0.0.1:${port}`,
    GT_TASK_QUEUE: 'gastown',
    GT_WORKFLOW_BUNDLE: inject('workflowBundlePath'),
  };
  const up = (args = extraArgs) => {
    const child = startChild(
      gtBin,
      ['up', '--port', String(port), '--gateway-port', String(gatewayPort), ...args],
      env,
    );
    children.push(child);
    return child;
  };
  return { home, testDir, port, env, up };
}

/** Slings a bead whose agent waits for `release` in testDir, and waits until that agent runs. */
async function slingWaitingBead(env: NodeJS.ProcessEnv, testDir: string, beadId: string, rigArgs: string[] = []) {
  const repo = await createRepo();
  // Agents get the rig's --env, never the worker's environment.
  const add = await runGt(
    [
      'rig',
      'add',
      'upr',
      '--repo',
      repo.origin,
      '--agent',
      agentScript('wait-for-release'),
      '--env',
      `TEST_DIR=${testDir}`,
      '--heartbeat-timeout',
      '5s',
      '--retry-backoff',
      '1s',
      ...rigArgs,
    ],
    env,
  );
  expect(add.code, add.stderr).toBe(0);
  const sling = await runGt(['sling', 'upr', 'Survive a restart', '--id', beadId], env);
  expect(sling.code, sling.stderr).toBe(0);
  await eventually(
    () => readFileSync(join(testDir, 'starts'), 'utf8').trim().split('\n').length === 1,
    60_000,
    'agent started',
  );
  return repo;
}

/** Releases the agent and checks the bead closed after one run and one merge. */
async function expectMergedOnce(
  env: NodeJS.ProcessEnv,
  testDir: string,
  beadId: string,
  repo: Awaited<ReturnType<typeof createRepo>>,
) {
  writeFileSync(join(testDir, 'release'), '');
  const final = await eventually(
    async () => {
      const r = await runGt(['bead', 'status', beadId, '--json'], env);
      const s = r.code === 0 ? BeadJson.parse(JSON.parse(r.stdout)) : undefined;
      return s && ['closed', 'failed'].includes(s.status) ? s : undefined;
    },
    90_000,
    'bead to finish after restart',
  );
  expect(final.status).toBe('closed');
  expect(final.runs).toEqual([expect.objectContaining({ runId: `${beadId}/r1/a1`, outcome: 'done' })]);
  // Exactly one agent process was ever started for the bead, and exactly one merge reached the target.
  expect(readFileSync(join(testDir, 'starts'), 'utf8').trim().split('\n')).toHaveLength(1);
  const merges = (await repo.log()).filter((c) => c.body.includes(`Gt-Merge-Request: mr:${beadId}:1@`));
  expect(merges.map((c) => c.sha)).toEqual([final.mergedCommit]);
}

describe('gt up', () => {
  it('stops on Ctrl-C and resumes in-flight work on the next start; the bead merges exactly once', async () => {
    const { testDir, port, env, up } = await upFixture();
    const first = up();
    await first.waitFor(/Gas Town is up/);
    expect(first.output()).toMatch(new RegExp(`Temporal\\s+127\\.0\\.0\\.1:${port}`));
    expect(first.output()).toMatch(/Gateway\s+http:\/\/127\.0\.0\.1:\d+/);
    const repo = await slingWaitingBead(env, testDir, 'b-up');

    expect(await first.stop('SIGINT')).toBe(0);
    expect(first.output()).toMatch(/Gas Town stopped\./);

    const second = up();
    await second.waitFor(/Gas Town is up/);
    await expectMergedOnce(env, testDir, 'b-up', repo);
    expect(await second.stop('SIGINT')).toBe(0);
  });

  it("runs its server with the town's settings on loopback; after kill -9 no server is left, and the next gt up resumes the bead once", async () => {
    const uiPort = await freePort();
    const { home, testDir, port, env, up } = await upFixture(['--ui-port', String(uiPort)]);
    const first = up();
    await first.waitFor(/Gas Town is up/);
    const { pid: serverPid, ownerPid } = serverRecord(home);
    expect(ownerPid).toBe(first.proc.pid);

    // The recorded process is the one holding the Temporal port: what it was started with is what serves us.
    const listeners = listenersOf(serverPid);
    expect(listeners.map((l) => l.port)).toEqual(expect.arrayContaining([port, uiPort]));
    // Frontend, Web UI and every other port of the server (HTTP, metrics) bind to loopback only.
    expect(
      listeners.filter((l) => l.ip !== '127.0.0.1'),
      JSON.stringify(listeners),
    ).toEqual([]);
    const argv = commandLine(serverPid)!;
    const dynamicConfig = Object.fromEntries(
      argv.flatMap((a, i) => (argv[i - 1] === '--dynamic-config-value' ? [a.split('=') as [string, string]] : [])),
    );
    for (const [key, value] of Object.entries({ ...TOWN_DYNAMIC_CONFIG, ...DEV_SERVER_DYNAMIC_CONFIG }))
      expect(dynamicConfig[key], key).toBe(String(value));
    const pragmas = argv.flatMap((a, i) => (argv[i - 1] === '--sqlite-pragma' ? [a] : []));
    expect(pragmas).toEqual(Object.entries(SQLITE_PRAGMAS).map(([k, v]) => `${k}=${v}`));
    // And the server took it: SQLite keeps a write-ahead log beside the database only in WAL mode.
    expect(existsSync(join(home, 'temporal.db-wal'))).toBe(true);

    // kill -9 may land while the agent's start step is in flight: that step is retried (and adopts the live agent)
    // after the rig's start timeout, 2 min by default; a short one keeps the test short.
    const repo = await slingWaitingBead(env, testDir, 'b-kill', ['--start-timeout', '15s']);
    first.proc.kill('SIGKILL');
    // The server dies with its owner: no process and no listener left on the port.
    await eventually(
      () => !processExists(serverPid) && !tcpListeners().some((l) => l.port === port || l.port === uiPort),
      10_000,
      `dev server ${serverPid} to die with gt up and free its ports`,
    );

    const second = up();
    await second.waitFor(/Gas Town is up/);
    const secondServer = serverRecord(home).pid;
    expect(secondServer).not.toBe(serverPid);
    await expectMergedOnce(env, testDir, 'b-kill', repo);
    // A clean stop takes its server down and removes the record.
    expect(await second.stop('SIGINT')).toBe(0);
    expect(processExists(secondServer)).toBe(false);
    expect(existsSync(join(home, 'temporal.pid'))).toBe(false);
  });

  it('stops a dev server an earlier gt up left on its SQLite file before starting its own', async () => {
    const { home, port, up } = await upFixture();
    // An orphan as an older gt up left it after kill -9: serving GT_HOME's file on the port, handed to init.
    const orphan = spawn(
      'sh',
      [
        '-c',
        `"$0" server start-dev --headless --ip 127.0.0.1 --port ${port} --db-filename "$1" >/dev/null 2>&1 & echo $!`,
        (await resolveTemporalCli()).path!,
        join(home, 'temporal.db'),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const orphanPid = Number(
      await new Promise<string>((ok) => orphan.stdout.once('data', (d: Buffer) => ok(d.toString()))),
    );
    try {
      await eventually(() => tcpListeners().some((l) => l.port === port), 30_000, 'orphan to listen');
      const next = up();
      await next.waitFor(/Gas Town is up/);
      expect(next.output()).toContain(
        `Stopping a Temporal dev server left running by an earlier gt up (pid ${orphanPid})`,
      );
      expect(processExists(orphanPid)).toBe(false);
      expect(listenersOf(serverRecord(home).pid).map((l) => l.port)).toContain(port);
      expect(await next.stop('SIGINT')).toBe(0);
    } finally {
      if (processExists(orphanPid)) process.kill(orphanPid, 'SIGKILL');
    }
  });

  it('refuses a taken port or a second gt up in one line, and exits 1 with the reason when its server dies', async () => {
    const { home, port, env, up } = await upFixture();
    const squatter = createServer();
    await new Promise<void>((ok) => squatter.listen(port, '127.0.0.1', ok));
    const refused = await runGt(['up', '--port', String(port), '--no-ui', '--gateway-port', '0'], env);
    squatter.close();
    expect(refused.code).toBe(1);
    expect(refused.stdout).not.toMatch(/is up/);
    expect(refused.stderr.trim()).toBe(
      `gt: Temporal port 127.0.0.1:${port} is already in use by another process: stop it or choose another --port`,
    );

    const running = up();
    await running.waitFor(/Gas Town is up/);
    const second = await runGt(['up', '--port', String(await freePort()), '--no-ui', '--gateway-port', '0'], env);
    expect(second.code).toBe(1);
    expect(second.stderr.trim()).toBe(
      `gt: another gt up (pid ${running.proc.pid}) is running with this GT_HOME; stop it first (its record: ${join(home, 'temporal.pid')})`,
    );

    const { pid: serverPid } = serverRecord(home);
    process.kill(serverPid, 'SIGKILL');
    const code = running.proc.exitCode ?? (await new Promise<number | null>((ok) => running.proc.once('exit', ok)));
    expect(code).toBe(1);
    expect(running.output()).toMatch(
      new RegExp(
        `gt up: the Temporal dev server \\(pid ${serverPid}\\) exited on its own \\(killed by SIGKILL\\); its log ${join(home, 'temporal.log')} ends: .*; stopping\\. Run gt up again to resume\\.`,
      ),
    );
  });
});
