/**
 * The runtime contract every agent runtime keeps, run against each runtime this host has (the others are skipped
 * with the reason printed): start-or-adopt by run id never yields two agents, even when asked concurrently or after
 * the agent exited; status reports running / exited with the exit code; stop ends the agent and is idempotent;
 * logs return the agent's output; a runtime that offers an exit hint settles it when the agent exits, not before;
 * the run's environment is the launch's and nothing of the worker's (not even where its run directory is). The local
 * runtimes start their wrapper from the worker's process helper: a fork of the worker's own process would block it.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DockerRuntime } from '../agents/docker-runtime';
import { ProcessRuntime } from '../agents/process-runtime';
import type { AgentLaunch, AgentRuntimeDriver } from '../agents/runtime';
import { SandboxRuntime } from '../agents/sandbox-runtime';
import { DEFAULT_AGENT_IMAGE } from '../domain/rig';
import { testLaunch, untilExited } from './helpers/launch';
import { eventually } from './helpers/town';

const runtimes: AgentRuntimeDriver[] = [new ProcessRuntime(), new SandboxRuntime(), new DockerRuntime()];
const availability = await Promise.all(runtimes.map(async (r) => ({ runtime: r, check: await r.available() })));
for (const { runtime, check } of availability) {
  if (!check.ok) console.warn(`runtime contract: skipping '${runtime.name}': ${check.reason}`);
}

const launchFor = (runtime: AgentRuntimeDriver, command: string): AgentLaunch =>
  testLaunch(`contract-${runtime.name}`, command, { image: DEFAULT_AGENT_IMAGE });

describe.each(availability.filter((a) => a.check.ok).map((a) => [a.runtime.name, a.runtime] as const))(
  'runtime %s',
  (_name, runtime) => {
    it('starts one agent per run id, however often and concurrently it is asked, and adopts it afterwards', async () => {
      const launch = launchFor(runtime, 'echo started >> starts; while [ ! -f release ]; do sleep 0.1; done');
      const results = await Promise.all([
        runtime.startOrAdopt(launch),
        runtime.startOrAdopt(launch),
        runtime.startOrAdopt(launch),
      ]);
      expect(new Set(results.map((r) => r.handle.ref)).size).toBe(1);
      expect(results.filter((r) => !r.adopted)).toHaveLength(1);
      await eventually(
        async () => (await runtime.status(results[0].handle, launch.runDir)).state === 'running',
        20_000,
        'running',
      );
      // Running is not yet having written its mark: stopping it before then would leave nothing to count.
      await eventually(() => existsSync(join(launch.cwd, 'starts')), 20_000, 'agent marked its start');
      if (runtime.name !== 'docker') {
        const stat = readFileSync(`/proc/${results[0].handle.ref}/stat`, 'utf8');
        expect(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])).not.toBe(process.pid);
      }
      await runtime.stop(results[0].handle, 1_000);
      await eventually(
        async () => (await runtime.status(results[0].handle, launch.runDir)).state === 'exited',
        20_000,
        'stopped',
      );
      await runtime.stop(results[0].handle, 1_000);
      const again = await runtime.startOrAdopt(launch);
      expect(again).toEqual({ handle: results[0].handle, adopted: true });
      expect(readFileSync(join(launch.cwd, 'starts'), 'utf8')).toBe('started\n');
    });

    it('reports the exit code and the output of an agent that finished', async () => {
      const launch = launchFor(runtime, 'echo "hello from $GT_RUN_ID"; echo oops >&2; exit 7');
      const { handle } = await runtime.startOrAdopt(launch);
      const status = await untilExited(runtime, handle, launch.runDir, 20_000);
      expect(status).toEqual({ state: 'exited', exitCode: 7 });
      const logs = await runtime.logs(handle, launch.runDir);
      expect(logs).toContain(`hello from ${launch.runId}`);
      expect(logs).toContain('oops');
    });

    it.skipIf(!runtime.exitHint)('settles its exit hint when the agent exits, and not while it runs', async () => {
      const launch = launchFor(runtime, 'while [ ! -f release ]; do sleep 0.05; done; exit 3');
      const { handle } = await runtime.startOrAdopt(launch);
      const hint = runtime.exitHint!(handle, launch.runDir);
      let settled = false;
      void hint.promise.then(() => (settled = true));
      await eventually(
        async () => (await runtime.status(handle, launch.runDir)).state === 'running',
        20_000,
        'running',
      );
      expect(settled).toBe(false);
      writeFileSync(join(launch.cwd, 'release'), '');
      await hint.promise;
      expect(await runtime.status(handle, launch.runDir)).toEqual({ state: 'exited', exitCode: 3 });
      hint.close();
    });

    it("gives the run the launch's environment and nothing of the worker's", async () => {
      process.env.GT_CONTRACT_WORKER_SECRET = 'worker-only';
      try {
        const launch = launchFor(runtime, 'env > env.txt');
        launch.env.GT_CONTRACT_DECLARED = 'declared';
        const { handle } = await runtime.startOrAdopt(launch);
        await untilExited(runtime, handle, launch.runDir, 20_000);
        const env = readFileSync(join(launch.cwd, 'env.txt'), 'utf8');
        expect(env).toContain('GT_CONTRACT_DECLARED=declared\n');
        expect(env).toContain(`GT_RUN_ID=${launch.runId}\n`);
        expect(env).not.toContain('worker-only');
        expect(env).not.toContain('GT_RUN_DIR');
        expect(env).not.toContain(launch.runDir);
      } finally {
        delete process.env.GT_CONTRACT_WORKER_SECRET;
      }
    });
  },
);
