/**
 * The `process` runtime: the agent is a detached local process group in its worktree. It survives a worker
 * crash (so a restarted worker re-attaches to it), and its wrapper shell records pid and exit code in the run
 * directory, which is how a later worker learns what happened while nobody was watching.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, rmSync, statSync, watch, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { OUTPUT_LOG, type AgentHandle, type AgentLaunch, type AgentRuntimeDriver, type AgentStatus, type ExitHint } from './runtime';

/** How long a launch marker without a pid file is taken as "still starting" before it counts as a failed spawn. */
const LAUNCH_SETTLE_MS = 5_000;

export const runFiles = (runDir: string) => ({
  lock: join(runDir, 'launch.lock'),
  pid: join(runDir, 'pid'),
  exit: join(runDir, 'exit'),
  log: join(runDir, OUTPUT_LOG),
});

/** The last `maxBytes` of a file ('' when it does not exist yet). */
export function readTail(file: string, maxBytes = 64 * 1024): string {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return '';
  }
  try {
    const size = fstatSync(fd).size;
    const length = Math.min(size, maxBytes);
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, size - length);
    return buf.toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** argv[0] of the wrapper shell: lets us tell our process from an unrelated one that reused the pid. */
export const processTag = (runId: string) => `gt-run:${runId}`;

export interface SpawnPlan {
  file: string;
  args: string[];
  /** Variables the runtime adds on top of the launch's. */
  env?: Record<string, string>;
}

/** Builds the wrapper: records its pid, runs the agent command, records the exit code. */
export function wrapperScript(command: string): string {
  return [
    'echo $$ > "$GT_RUN_DIR/pid.tmp" && mv "$GT_RUN_DIR/pid.tmp" "$GT_RUN_DIR/pid"',
    `( ${command}\n)`,
    'code=$?',
    'echo $code > "$GT_RUN_DIR/exit.tmp" && mv "$GT_RUN_DIR/exit.tmp" "$GT_RUN_DIR/exit"',
    'exit $code',
  ].join('\n');
}

function readInt(file: string): number | null {
  try {
    const n = Number.parseInt(readFileSync(file, 'utf8').trim(), 10);
    return Number.isFinite(n) ? n : null;
  } catch {
    return null;
  }
}

export function isAlive(pid: number, tag: string): AgentStatus {
  try {
    process.kill(pid, 0);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ESRCH') return { state: 'exited', exitCode: null };
    if (code !== 'EPERM') return { state: 'unknown', detail: `kill(0) failed: ${code}` };
  }
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    // A zombie has an empty cmdline: it has exited, only not been reaped yet.
    if (cmdline === '') return { state: 'exited', exitCode: null };
    return cmdline.includes(tag) ? { state: 'running' } : { state: 'exited', exitCode: null };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return existsSync('/proc/self') ? { state: 'exited', exitCode: null } : { state: 'running' };
    return { state: 'unknown', detail: `reading /proc failed: ${code}` };
  }
}

export class ProcessRuntime implements AgentRuntimeDriver {
  readonly name: 'process' | 'sandbox' = 'process';

  available(): Promise<{ ok: true } | { ok: false; reason: string }> {
    return Promise.resolve({ ok: true });
  }

  /** How the wrapper is spawned; the sandbox runtime wraps it in bubblewrap. */
  protected plan(launch: AgentLaunch): SpawnPlan {
    return { file: '/bin/sh', args: ['-c', wrapperScript(launch.command), processTag(launch.runId)] };
  }

  async startOrAdopt(launch: AgentLaunch): Promise<{ handle: AgentHandle; adopted: boolean }> {
    const files = runFiles(launch.runDir);
    mkdirSync(launch.runDir, { recursive: true });
    const handleFor = (pid: number): AgentHandle => ({ runtime: this.name, runId: launch.runId, ref: String(pid) });

    const existing = readInt(files.pid);
    if (existing !== null) return { handle: handleFor(existing), adopted: true };

    let lockFd: number;
    try {
      lockFd = openSync(files.lock, 'wx');
    } catch {
      // Someone already launched (or began to): wait for its pid instead of launching a second agent.
      const deadline = Date.now() + LAUNCH_SETTLE_MS;
      while (Date.now() < deadline) {
        const pid = readInt(files.pid);
        if (pid !== null) return { handle: handleFor(pid), adopted: true };
        await delay(100);
      }
      const age = Date.now() - statSync(files.lock).mtimeMs;
      if (age < LAUNCH_SETTLE_MS) throw new Error(`run ${launch.runId} is being launched by another attempt`);
      // The earlier launcher died between taking the lock and spawning: no agent exists, so launching is safe.
      rmSync(files.lock, { force: true });
      lockFd = openSync(files.lock, 'wx');
    }
    writeFileSync(lockFd, String(process.pid));
    closeSync(lockFd);

    const out = openSync(files.log, 'a');
    const plan = this.plan(launch);
    const child = spawn(plan.file, plan.args, {
      cwd: launch.cwd,
      env: { ...launch.hostEnv, ...launch.env, ...plan.env, GT_RUN_DIR: launch.runDir },
      detached: true,
      stdio: ['ignore', out, out],
    });
    closeSync(out);
    const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
    child.unref();
    const deadline = Date.now() + LAUNCH_SETTLE_MS;
    while (Date.now() < deadline) {
      const pid = readInt(files.pid);
      if (pid !== null) return { handle: handleFor(pid), adopted: false };
      const failed = await Promise.race([spawnError, delay(50).then(() => null)]);
      if (failed) throw failed;
    }
    if (child.pid !== undefined) return { handle: handleFor(child.pid), adopted: false };
    throw new Error(`agent for ${launch.runId} did not start`);
  }

  status(handle: AgentHandle, runDir: string): Promise<AgentStatus> {
    const files = runFiles(runDir);
    const exitCode = readInt(files.exit);
    if (exitCode !== null) return Promise.resolve({ state: 'exited', exitCode });
    const alive = isAlive(Number(handle.ref), processTag(handle.runId));
    // The wrapper records its exit code just before it exits, so one that is gone has left it, unless it was killed:
    // read again, or an exit between the two looks (seen under load) would lose its code.
    if (alive.state === 'exited') return Promise.resolve({ state: 'exited', exitCode: readInt(files.exit) });
    return Promise.resolve(alive);
  }

  async stop(handle: AgentHandle, graceMs: number): Promise<void> {
    const pid = Number(handle.ref);
    const tag = processTag(handle.runId);
    if (isAlive(pid, tag).state !== 'running') return;
    const signalGroup = (sig: NodeJS.Signals) => {
      try {
        process.kill(-pid, sig);
      } catch {
        // Already gone.
      }
    };
    signalGroup('SIGTERM');
    const deadline = Date.now() + graceMs;
    while (Date.now() < deadline) {
      if (isAlive(pid, tag).state !== 'running') return;
      await delay(100);
    }
    signalGroup('SIGKILL');
  }

  logs(_handle: AgentHandle, runDir: string, maxBytes?: number): Promise<string> {
    return Promise.resolve(readTail(runFiles(runDir).log, maxBytes));
  }

  /** The wrapper renames its exit file into the run directory as its last act: watching for that name is enough. */
  exitHint(_handle: AgentHandle, runDir: string): ExitHint {
    let resolve: () => void = () => undefined;
    const promise = new Promise<void>((r) => (resolve = r));
    try {
      const watcher = watch(runDir, (_event, file) => {
        if (file === 'exit') resolve();
      });
      // Losing the watch (e.g. the inotify limit) only means waiting for the next poll.
      watcher.on('error', () => watcher.close());
      return { promise, close: () => watcher.close() };
    } catch {
      return { promise, close: () => undefined };
    }
  }
}
