/**
 * Runs short child processes (git) from a small helper process instead of the worker's own.
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

/** The helper's program: one JSON request per line in, one JSON answer per line out, children run concurrently. */
const HELPER = `
const { execFile } = require('node:child_process');
let buf = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  buf += chunk;
  for (let i = buf.indexOf('\\n'); i >= 0; i = buf.indexOf('\\n')) {
    const line = buf.slice(0, i);
    buf = buf.slice(i + 1);
    if (!line) continue;
    const r = JSON.parse(line);
    const child = execFile(r.file, r.args, { cwd: r.cwd, env: r.env, maxBuffer: r.maxBuffer }, (err, stdout, stderr) => {
      // A command that could not be started at all (no such directory) says why; git's own failures say it in stderr.
      const why = err && typeof err.code === 'string' && !stderr ? err.message : stderr;
      process.stdout.write(JSON.stringify({ id: r.id, ok: !err, stdout, stderr: why }) + '\\n');
    });
    child.stdin.on('error', () => {});
    child.stdin.end(r.input || '');
  }
});
process.stdin.on('end', () => process.exit(0));
`;

type Helper = ChildProcessByStdio<Writable, Readable, null>;

export class Spawner {
  private helper?: Helper;
  private readonly pending = new Map<number, { resolve: (r: SpawnResult) => void; reject: (e: Error) => void }>();
  private nextId = 1;

  run(req: SpawnRequest): Promise<SpawnResult> {
    const helper = this.helper ?? this.start();
    const id = this.nextId++;
    return new Promise<SpawnResult>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      if (this.pending.size === 1) this.hold(helper, true);
      helper.stdin.write(`${JSON.stringify({ id, ...req, maxBuffer: req.maxBuffer ?? 16 * 1024 * 1024 })}\n`);
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
        const answer = JSON.parse(buf.slice(0, i)) as SpawnResult & { id: number };
        buf = buf.slice(i + 1);
        const waiter = this.pending.get(answer.id);
        this.pending.delete(answer.id);
        waiter?.resolve({ ok: answer.ok, stdout: answer.stdout, stderr: answer.stderr });
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
