/** Gates: the rig's shell commands that must pass on the exact tree that will become the target branch. */
import { spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Context, heartbeat } from '@temporalio/activity';

export interface GateResult {
  gate: string;
  ok: boolean;
  exitCode: number | null;
  timedOut: boolean;
  durationMs: number;
  logPath: string;
  /** Last lines of output; the full log stays on disk, out of workflow payloads. */
  tail: string;
}

const TAIL_CHARS = 2000;

export async function runGate(gate: string, cwd: string, logPath: string, timeoutMs: number, env: Record<string, string>): Promise<GateResult> {
  const started = Date.now();
  const log = createWriteStream(logPath);
  const child = spawn('/bin/sh', ['-c', gate], { cwd, env: { ...process.env, ...env }, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  let timedOut = false;
  const killGroup = () => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already exited
    }
  };
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup();
  }, timeoutMs);
  // A cancelled merge (worker shutting down, section abandoned) must not leave its gate running beside the retry.
  const cancelled = cancellationSignal();
  cancelled?.addEventListener('abort', killGroup);
  const beat = setInterval(() => heartbeatSafe(`gate: ${gate}`), 5_000);
  const exitCode = await new Promise<number | null>((resolve) => {
    child.on('error', () => resolve(127));
    child.on('close', (code) => resolve(code));
  });
  clearTimeout(timer);
  clearInterval(beat);
  cancelled?.removeEventListener('abort', killGroup);
  await new Promise<void>((resolve) => log.end(resolve));
  const text = readFileSync(logPath, 'utf8');
  return {
    gate,
    ok: exitCode === 0 && !timedOut,
    exitCode,
    timedOut,
    durationMs: Date.now() - started,
    logPath,
    tail: text.slice(-TAIL_CHARS),
  };
}

/** Runs gates in order and stops at the first failure. */
export async function runGates(gates: string[], cwd: string, logDir: string, timeoutMs: number, env: Record<string, string>): Promise<GateResult[]> {
  mkdirSync(logDir, { recursive: true });
  const results: GateResult[] = [];
  for (const [i, gate] of gates.entries()) {
    const result = await runGate(gate, cwd, join(logDir, `gate-${i + 1}.log`), timeoutMs, env);
    results.push(result);
    if (!result.ok) break;
  }
  return results;
}

function cancellationSignal(): AbortSignal | undefined {
  try {
    return Context.current().cancellationSignal;
  } catch {
    return undefined;
  }
}

function heartbeatSafe(details: string) {
  try {
    heartbeat(details);
  } catch {
    // Outside an activity (unit use): nothing to report to.
  }
}
