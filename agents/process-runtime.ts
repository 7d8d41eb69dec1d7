/**
 * The `process` runtime: the agent is a detached local process group on the worker host. For trusted agents only
 * (docs/security.md): it sees the whole host as the worker's user; nothing but its environment is restricted, and
 * `launch.limits` are not applied (the sandbox runtime applies them).
 *
 * Invariants, shared with the sandbox runtime (which only changes what the inner command is):
 * - The run is an OUTER wrapper shell spawned for the worker (by its process helper, host/spawner.ts) as a detached
 *   process-group leader whose argv holds `processTag(runId)`. The wrapper writes its own pid to `runDir/pid` first,
 *   then runs the inner command, then writes the inner command's exit code to `runDir/exit` (both by atomic rename);
 *   stdout and stderr of both go to `runDir/output.log`. Because the wrapper is detached, a worker crash leaves it
 *   running, and a later worker re-attaches by the pid file; the tag tells our wrapper from an unrelated process that
 *   reused the pid.
 * - The run's environment is exactly `launch.env` (a shell adds PWD): the wrapper is spawned with it and the worker
 *   adds nothing. The run directory reaches the wrapper as a positional argument, never as a variable, and the
 *   inner command is started with fresh arguments, so neither the path nor anything else of the worker leaks in.
 * - Start-or-adopt by run id: a pid file means adopt; otherwise `launch.lock` (O_EXCL) elects one launcher. A lock
 *   whose launcher died before the pid file appeared is taken over only after no wrapper carrying the run's tag is
 *   found in /proc, so a second agent is never started for a run id.
 * - stop() signals the wrapper's process group (TERM, then KILL after the grace period): the agent and the children
 *   that stay in its group. An agent of this runtime that leaves its process group (setsid) survives stop().
 */
import {
  closeSync,
  existsSync,
  fstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  watch,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { spawner } from '../host/spawner';
import {
  OUTPUT_LOG,
  type AgentHandle,
  type AgentLaunch,
  type AgentRuntimeDriver,
  type AgentStatus,
  type ExitHint,
} from './runtime';

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

/** A string as one single-quoted shell word. */
export const shellQuote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

/**
 * The worker-side wrapper: `sh -c OUTER <tag> <runDir> <prelude> <inner argv...>`. Everything it needs arrives as
 * positional arguments (no variable is assigned, so none of the run's exported variables is touched). The inner
 * command runs in a subshell that drops the wrapper's arguments and evaluates the prelude, shell code that runs
 * `"$@"` and leaves its exit status (usually `exec "$@"`; the sandbox joins the run's cgroups there, so the wrapper
 * itself stays outside them, and a networked sandbox attaches slirp4netns before the command starts). An exit code
 * that cannot be recorded leaves no exit file: the run then reads as exited with an unknown code.
 */
const OUTER = [
  'echo $$ > "$1/pid.tmp" && /bin/mv -f "$1/pid.tmp" "$1/pid" || exit 125',
  '(eval "shift 2; $2")',
  'set -- "$1" $?',
  'echo $2 > "$1/exit.tmp" && /bin/mv -f "$1/exit.tmp" "$1/exit"',
  'exit $2',
].join('\n');

/** What runs inside the wrapper: the argv of the inner command and the prelude that runs it. */
export interface InnerPlan {
  argv: string[];
  prelude: string;
}

function readInt(file: string): number | null {
  try {
    const n = Number.parseInt(readFileSync(file, 'utf8').trim(), 10);
    return Number.isFinite(n) ? n : null;
  } catch {
    return null;
  }
}

const hasArg = (cmdline: string, tag: string) => cmdline.split('\0').includes(tag);

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
    return hasArg(cmdline, tag) ? { state: 'running' } : { state: 'exited', exitCode: null };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return existsSync('/proc/self') ? { state: 'exited', exitCode: null } : { state: 'running' };
    return { state: 'unknown', detail: `reading /proc failed: ${code}` };
  }
}

/** "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so fields are counted after the last ')'. */
function statFields(pid: string): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/**
 * The pid of a live wrapper carrying `tag`: a process-group leader with the tag as an argument. (A subshell the
 * wrapper forks carries the same arguments until it execs, but it is not the group leader.)
 */
export function findTagged(tag: string): number | null {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (!hasArg(readFileSync(`/proc/${entry}/cmdline`, 'utf8'), tag)) continue;
      if (statFields(entry)[2] === entry) return Number(entry);
    } catch {
      // Gone while we looked.
    }
  }
  return null;
}

/**
 * Whether a process group has a live member. Zombies do not count: orphans of a killed wrapper are reparented to
 * the host's init, which may never reap them (a worker that is pid 1 of a container does not).
 */
function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
  } catch {
    return false;
  }
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const [state, , pgrp] = statFields(entry);
      if (pgrp === String(pgid) && state !== 'Z') return true;
    } catch {
      // Gone while we looked.
    }
  }
  return false;
}

export class ProcessRuntime implements AgentRuntimeDriver {
  readonly name: 'process' | 'sandbox' = 'process';

  available(): Promise<{ ok: true } | { ok: false; reason: string }> {
    return Promise.resolve({ ok: true });
  }

  /** The inner command of a launch; the sandbox runtime runs it under bubblewrap. Called once, just before spawning. */
  protected inner(launch: AgentLaunch): InnerPlan {
    return { argv: ['/bin/sh', '-c', launch.command], prelude: 'exec "$@"' };
  }

  /** Frees what a run that is over left behind (the sandbox's cgroups); called whenever a run is seen exited. */
  protected release(_runDir: string): void {}

  async startOrAdopt(launch: AgentLaunch): Promise<{ handle: AgentHandle; adopted: boolean }> {
    const files = runFiles(launch.runDir);
    mkdirSync(launch.runDir, { recursive: true, mode: 0o700 });
    const tag = processTag(launch.runId);
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
      // The launcher died after taking the lock. Its wrapper may still have been spawned (and be too slow to write
      // its pid file): adopt it rather than start a second agent.
      const orphan = findTagged(tag);
      if (orphan !== null) return { handle: handleFor(orphan), adopted: true };
      rmSync(files.lock, { force: true });
      lockFd = openSync(files.lock, 'wx');
    }
    writeFileSync(lockFd, String(process.pid));
    closeSync(lockFd);

    let plan: InnerPlan;
    try {
      plan = this.inner(launch);
    } catch (err) {
      // Nothing was started: a corrected launch of the same run id may go ahead at once.
      rmSync(files.lock, { force: true });
      throw err;
    }
    // Watched from before the spawn: the wrapper writes its pid within milliseconds, and a poll alone would add up to
    // its interval to every start (the start is on a bead's critical path).
    const pidWritten = fileAppears(launch.runDir, 'pid');
    // Started by the worker's process helper: a fork of the worker's own (large) process would block its main thread
    // for milliseconds at every run's and gate's start (host/spawner.ts).
    let started: number | undefined;
    const spawnError = spawner
      .launch({
        file: '/bin/sh',
        args: ['-c', OUTER, tag, launch.runDir, plan.prelude, ...plan.argv],
        cwd: launch.cwd,
        env: launch.env,
        log: files.log,
      })
      .then(
        (pid) => {
          started = pid;
          return new Promise<Error>(() => undefined);
        },
        (err: Error) => err,
      );
    try {
      const deadline = Date.now() + LAUNCH_SETTLE_MS;
      while (Date.now() < deadline) {
        const pid = readInt(files.pid);
        if (pid !== null) return { handle: handleFor(pid), adopted: false };
        const failed = await Promise.race([
          spawnError,
          pidWritten.promise.then(() => null),
          delay(50).then(() => null),
        ]);
        if (failed) throw failed;
      }
    } finally {
      pidWritten.close();
    }
    if (started !== undefined) return { handle: handleFor(started), adopted: false };
    throw new Error(`agent for ${launch.runId} did not start`);
  }

  status(handle: AgentHandle, runDir: string): Promise<AgentStatus> {
    const files = runFiles(runDir);
    let status: AgentStatus;
    const exitCode = readInt(files.exit);
    if (exitCode !== null) status = { state: 'exited', exitCode };
    else {
      const alive = isAlive(Number(handle.ref), processTag(handle.runId));
      // The wrapper records its exit code just before it exits, so one that is gone has left it, unless it was
      // killed: read again, or an exit between the two looks (seen under load) would lose its code.
      status = alive.state === 'exited' ? { state: 'exited', exitCode: readInt(files.exit) } : alive;
    }
    if (status.state === 'exited') this.release(runDir);
    return Promise.resolve(status);
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
    // Waits for the whole group, not the wrapper: the wrapper dies of the TERM at once, an agent may take its time
    // or ignore it.
    const deadline = Date.now() + graceMs;
    while (Date.now() < deadline) {
      if (!groupAlive(pid)) return;
      await delay(100);
    }
    signalGroup('SIGKILL');
  }

  logs(_handle: AgentHandle, runDir: string, maxBytes?: number): Promise<string> {
    return Promise.resolve(readTail(runFiles(runDir).log, maxBytes));
  }

  /** The wrapper renames its exit file into the run directory as its last act: watching for that name is enough. */
  exitHint(_handle: AgentHandle, runDir: string): ExitHint {
    return fileAppears(runDir, 'exit');
  }
}

/**
 * Settles when `name` is (re)written in `dir` (the wrapper renames its pid and exit files into place): a hint that
 * saves waiting for the next poll, never the only check, since a lost watch (e.g. the inotify limit) never settles.
 */
function fileAppears(dir: string, name: string): ExitHint {
  let resolve: () => void = () => undefined;
  const promise = new Promise<void>((r) => (resolve = r));
  try {
    const watcher = watch(dir, (_event, file) => {
      if (file === name) resolve();
    });
    watcher.on('error', () => watcher.close());
    return { promise, close: () => watcher.close() };
  } catch {
    return { promise, close: () => undefined };
  }
}
