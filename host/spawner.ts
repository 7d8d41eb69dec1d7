/**
 * Runs the worker's child processes from a small helper process instead of the worker's own: short commands (git),
 * and the detached wrappers of agent runs and gates (agents/process-runtime.ts).
 *
 * Why: on Linux, libuv starts a child with fork(), which copies the page tables of the whole calling process while
 * that thread waits. The worker's process is large (the SDK, its workflow threads' heaps, cached workflows): at a few
 * hundred MB each spawn blocked the worker's main thread for 7–15 ms of CPU — in a profile of a 50-bead run, 14 s of
 * its 43 s of main-thread work were git spawns, which delayed every activity, gateway call and workflow task hand-over
 * behind them (docs/performance.md). The helper is a bare `node -e` process of a few tens of MB, whose fork costs about
 * a millisecond, and the worker's thread only writes a line to its stdin.
 *
 * Invariants:
 * - A command runs exactly as execFile would run it here: the file, arguments, working directory and environment are
 *   the caller's (the helper adds nothing: git's environment stays exactly what activities/git.ts allows), its stdin
 *   is the given input, and its result is the exit status with stdout and stderr (bounded by maxBuffer).
 * - A launch starts a detached process-group leader with its output appended to a log file, exactly as the worker
 *   would have started it (file, arguments, directory, environment), and answers with its pid once it is running, or
 *   with why it could not start; the helper keeps nothing of it (a detached child outlives the helper and the worker).
 * - The helper is started on first use and again after it died; a helper that dies fails the commands it was running
 *   (an activity's retry runs them again) and never leaves the worker waiting. It exits when the worker goes (its stdin
 *   closes), and never keeps the worker's event loop alive while it has nothing to run.
 */
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';

export interface SpawnResult {
  ok: boolean;
  stdout: string;
  stderr: string;
}

export interface SpawnRequest {
  file: string;
  args: string[];
  cwd: string;
  env: NodeJS.ProcessEnv;
  input?: string;
  maxBuffer?: number;
}

export interface LaunchRequest extends Pick<SpawnRequest, 'file' | 'args' | 'cwd' | 'env'> {
  /** Where the process's stdout and stderr are appended (created with mode 600). */
  log: string;
}

/**
 * The helper's program: one JSON request per line in, one JSON answer per line out, children run concurrently. A
 * request with a log is a launch.
 */
const HELPER = `
const { execFile, spawn } = require('node:child_process');
const { openSync, closeSync } = require('node:fs');
function launch(r, answer) {
  let fd;
  try {
    fd = openSync(r.log, 'a', 0o600);
  } catch (err) {
    return answer({ ok: false, stderr: err.message });
  }
  let child;
  try {
    child = spawn(r.file, r.args, { cwd: r.cwd, env: r.env, detached: true, stdio: ['ignore', fd, fd] });
  } catch (err) {
    return answer({ ok: false, stderr: err.message });
  } finally {
    closeSync(fd);
  }
  let told = false;
  const once = (a) => told || ((told = true), answer(a));
  child.once('spawn', () => once({ ok: true, pid: child.pid }));
  child.once('error', (err) => once({ ok: false, stderr: err.message }));
  child.unref();
}
let buf = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  buf += chunk;
  for (let i = buf.indexOf('\\n'); i >= 0; i = buf.indexOf('\\n')) {
    const line = buf.slice(0, i);
    buf = buf.slice(i + 1);
    if (!line) continue;
    const r = JSON.parse(line);
    const answer = (a) => process.stdout.write(JSON.stringify({ id: r.id, ...a }) + '\\n');
    if (r.log !== undefined) {
      launch(r, answer);
      continue;
    }
    const child = execFile(r.file, r.args, { cwd: r.cwd, env: r.env, maxBuffer: r.maxBuffer }, (err, stdout, stderr) => {
      // A command that could not be started at all (no such directory) says why; git's own failures say it in stderr.
      const why = err && typeof err.code === 'string' && !stderr ? err.message : stderr;
      answer({ ok: !err, stdout, stderr: why });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(r.input || '');
  }
});
process.stdin.on('end', () => process.exit(0));
`;

type Helper = ChildProcessByStdio<Writable, Readable, null>;
/** A command's answer has its output; a launch's has the pid. */
type Answer = { ok: boolean; stdout?: string; stderr?: string; pid?: number };

export class Spawner {
  private helper?: Helper;
  private readonly pending = new Map<number, { resolve: (a: Answer) => void; reject: (e: Error) => void }>();
  private nextId = 1;

  async run(req: SpawnRequest): Promise<SpawnResult> {
    const { ok, stdout = '', stderr = '' } = await this.ask({ ...req, maxBuffer: req.maxBuffer ?? 16 * 1024 * 1024 });
    return { ok, stdout, stderr };
  }

  /** Starts a detached process; its pid once it runs, or an error saying why it could not start. */
  async launch(req: LaunchRequest): Promise<number> {
    const { ok, pid, stderr } = await this.ask(req);
    if (!ok || pid === undefined) throw new Error(`could not start ${req.file}: ${stderr || 'no reason given'}`);
    return pid;
  }

  private ask(req: SpawnRequest | LaunchRequest): Promise<Answer> {
    const helper = this.helper ?? this.start();
    const id = this.nextId++;
    return new Promise<Answer>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      if (this.pending.size === 1) this.hold(helper, true);
      helper.stdin.write(`${JSON.stringify({ id, ...req })}\n`);
    });
  }

  private start(): Helper {
    const helper = spawn(process.execPath, ['-e', HELPER], {
      stdio: ['pipe', 'pipe', 'inherit'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    });
    this.helper = helper;
    let buf = '';
    helper.stdout.setEncoding('utf8');
    helper.stdout.on('data', (chunk: string) => {
      buf += chunk;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const answer = JSON.parse(buf.slice(0, i)) as Answer & { id: number };
        buf = buf.slice(i + 1);
        const waiter = this.pending.get(answer.id);
        this.pending.delete(answer.id);
        waiter?.resolve(answer);
      }
      if (this.pending.size === 0) this.hold(helper, false);
    });
    const gone = (why: string) => {
      if (this.helper === helper) this.helper = undefined;
      const failed = [...this.pending.values()];
      this.pending.clear();
      for (const w of failed)
        w.reject(new Error(`the worker's process helper ${why}; the command's outcome is unknown`));
    };
    helper.on('exit', (code, signal) => gone(`exited (${signal ?? code})`));
    helper.on('error', (err) => gone(`failed: ${err.message}`));
    helper.stdin.on('error', () => undefined);
    this.hold(helper, false);
    return helper;
  }

  /** Keeps the worker's event loop alive only while the helper runs something. */
  private hold(helper: Helper, busy: boolean): void {
    for (const h of [helper, helper.stdin, helper.stdout] as { ref(): unknown; unref(): unknown }[])
      if (busy) h.ref();
      else h.unref();
  }
}

/** The process-wide helper (one per worker process). */
export const spawner = new Spawner();
