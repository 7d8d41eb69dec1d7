/**
 * One agent run for the runtime tests (runtime-contract, sandbox-runtime, sandbox-network, sandbox-boundary,
 * docker-real): the launch to start, the poll that waits for it to end, and a worker of its own to start it from.
 *
 * What `testLaunch` guarantees: every launch gets a fresh root directory of its own holding the run's work tree
 * (`cwd`) and its agent directory with `home` and `tmp` in it (HOME and TMPDIR of the default environment), all
 * created; and a run directory (`runDir`) in that root outside both, so never visible to the run (the runtime creates
 * it). Run ids are unique across test runs, not only within one (pid, clock and a counter): docker containers outlive
 * the test process, and a run id seen before would be adopted instead of started.
 *
 * The rest is a default each test file may override: where the root is made (a sandbox test that shows host files
 * hidden keeps its roots out of /tmp, which the sandbox replaces), the environment, network, mounts, image, limits.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentHandle, AgentLaunch, AgentRuntimeDriver, AgentStatus } from '../../agents/runtime';
import { ResourceLimits } from '../../domain/rig';
import { eventually } from './town';

/** What a test may choose of a launch; its identity and its paths are the helper's. */
export interface LaunchOverrides extends Partial<
  Omit<AgentLaunch, 'runId' | 'beadId' | 'cwd' | 'agentDir' | 'runDir' | 'env'>
> {
  /** Makes the fresh root, given a name prefix (default: a new directory in the OS temp dir). */
  makeRoot?: (prefix: string) => string;
  /** Merged over the default environment; or, as a function of the launch, the whole environment instead. */
  env?: Record<string, string> | ((launch: AgentLaunch) => Record<string, string>);
}

let seq = 0;

/**
 * A launch of `command` whose run id starts with `prefix`. By default: the host's PATH, HOME and TMPDIR in the agent
 * directory, GT_RUN_ID; a polecat without network, mounts or image, with the default limits.
 */
export function testLaunch(prefix: string, command: string, overrides: LaunchOverrides = {}): AgentLaunch {
  const { makeRoot = (p: string) => mkdtempSync(join(tmpdir(), p)), env, ...chosen } = overrides;
  const root = makeRoot(`gt-${prefix}-`);
  const cwd = join(root, 'worktree');
  const agentDir = join(root, 'agent');
  for (const dir of [cwd, join(agentDir, 'home'), join(agentDir, 'tmp')]) mkdirSync(dir, { recursive: true });
  const runId = `${prefix}-${process.pid}-${Date.now()}-${++seq}/r1/a1`;
  const launch: AgentLaunch = {
    runId,
    beadId: runId.split('/')[0]!,
    role: 'polecat',
    command,
    cwd,
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: join(agentDir, 'home'),
      TMPDIR: join(agentDir, 'tmp'),
      GT_RUN_ID: runId,
    },
    runDir: join(root, 'run'),
    agentDir,
    allowNetwork: false,
    mounts: [],
    limits: ResourceLimits.parse({}),
    ...chosen,
  };
  launch.env = typeof env === 'function' ? env(launch) : { ...launch.env, ...env };
  return launch;
}

/** Polls the status of a started run until it has exited, and returns that status. */
export function untilExited(
  runtime: AgentRuntimeDriver,
  handle: AgentHandle,
  runDir: string,
  timeoutMs = 30_000,
  what = `${handle.runId} exited`,
) {
  return eventually(
    async () => {
      const s: AgentStatus = await runtime.status(handle, runDir);
      return s.state === 'exited' ? s : undefined;
    },
    timeoutMs,
    what,
  );
}

/** Starts (or adopts) the launch's run and waits for it to exit; returns its final status. */
export async function runToExit(runtime: AgentRuntimeDriver, launch: AgentLaunch, timeoutMs = 30_000) {
  const { handle } = await runtime.startOrAdopt(launch);
  return untilExited(runtime, handle, launch.runDir, timeoutMs);
}

/**
 * Starts the launch's run from a worker of its own: a child process that starts or adopts it with a fresh `runtime`
 * (its script written in `dir`), then idles. Resolves with the run's handle and `kill`, which kills that worker with
 * kill -9 and waits until it is gone.
 */
export async function startInWorker(runtime: 'process' | 'sandbox', launch: AgentLaunch, dir: string) {
  const script = join(dir, 'start.mts');
  writeFileSync(
    script,
    [
      `import { ${runtime === 'process' ? 'ProcessRuntime' : 'SandboxRuntime'} as Runtime } from ${JSON.stringify(join(process.cwd(), 'agents', `${runtime}-runtime.ts`))};`,
      'const { handle } = await new Runtime().startOrAdopt(JSON.parse(process.argv[2]!));',
      'console.log(`HANDLE ${JSON.stringify(handle)}`);',
      'setInterval(() => undefined, 60_000);',
    ].join('\n'),
  );
  const worker = spawn(process.execPath, ['--import', 'tsx', script, JSON.stringify(launch)], {
    cwd: process.cwd(),
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  worker.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const line = await eventually(() => /HANDLE (.*)\n/.exec(out)?.[1], 30_000, 'the first worker started the run');
  const kill = async () => {
    const gone = new Promise((resolve) => worker.once('exit', resolve));
    worker.kill('SIGKILL');
    await gone;
  };
  return { handle: JSON.parse(line) as AgentHandle, kill };
}
