/**
 * Gates: the rig's shell commands that must pass on the exact tree that will become the target branch.
 *
 * A gate runs code the agents wrote (`npm test` runs their scripts), so it is an untrusted run like an agent's:
 * it goes through the rig's runtime (sandbox or container, network per rig), with the allow-listed environment
 * and none of the worker's secrets; it sees the candidate's work tree and, read-only, the mirror its `.git` points
 * into. Only a bounded tail of its output enters a workflow payload; the whole log stays in its run directory.
 */
import { appendFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { Context, heartbeat, log } from '@temporalio/activity';
import { printableText } from '../domain/caps';
import { OUTPUT_LOG, type AgentLaunch, type AgentRuntimeDriver, type AgentStatus } from '../agents/runtime';
import type { AgentRuntime } from '../domain/rig';
import { readHandle, recordHandle } from './run-handles';

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

const TAIL_BYTES = 2000;
const POLL_MS = 200;
const STOP_GRACE_MS = 2_000;

/** What the gates of one candidate share (tree, mounts, env, their own directory); each gate has its run directory. */
export type GateLaunch = Omit<AgentLaunch, 'command' | 'runId' | 'role' | 'runDir'> & {
  runDir: (runId: string) => string;
  /**
   * Where each gate's run id goes before it starts (its handle then in its run directory): the attempt's ledger, from
   * which a retry stops the gates of an attempt whose worker was killed (activities/merge.ts attemptTree).
   */
  ledger?: string;
};

export async function runGate(
  driver: AgentRuntimeDriver,
  gate: string,
  runId: string,
  base: GateLaunch,
  timeoutMs: number,
): Promise<GateResult> {
  const started = Date.now();
  const { ledger, ...shared } = base;
  const runDir = shared.runDir(runId);
  const launch: AgentLaunch = { ...shared, command: gate, runId, role: 'gate', runDir };
  if (ledger) {
    mkdirSync(dirname(ledger), { recursive: true });
    appendFileSync(ledger, `${runId}\n`);
  }
  const { handle } = await driver.startOrAdopt(launch);
  if (ledger) recordHandle(runDir, handle);
  const cancelled = cancellationSignal();
  const beat = setInterval(() => heartbeatSafe(`gate: ${gate}`), 5_000);
  let timedOut = false;
  let status: AgentStatus = { state: 'running' };
  try {
    const deadline = started + timeoutMs;
    const hint = driver.exitHint?.(handle, runDir);
    try {
      for (;;) {
        status = await driver.status(handle, runDir);
        if (status.state === 'exited') break;
        if (cancelled?.aborted) break;
        if (Date.now() >= deadline) {
          timedOut = true;
          break;
        }
        await Promise.race([delay(POLL_MS), ...(hint ? [hint.promise] : [])]);
      }
    } finally {
      hint?.close();
    }
    // A cancelled merge (worker shutting down, section abandoned) must not leave its gate running beside the retry.
    if (status.state !== 'exited') await driver.stop(handle, STOP_GRACE_MS);
    const log = await driver
      .logs(handle, runDir, TAIL_BYTES)
      .catch((err: unknown) => `(log unavailable: ${String(err)})`);
    // The tail becomes feedback in prompts and `gt bead status`: what the gate printed is agent code's output.
    const tail = printableText(log);
    const exitCode = status.state === 'exited' ? status.exitCode : null;
    return {
      gate,
      ok: exitCode === 0 && !timedOut,
      exitCode,
      timedOut,
      durationMs: Date.now() - started,
      logPath: join(runDir, OUTPUT_LOG),
      tail,
    };
  } finally {
    clearInterval(beat);
    await driver.remove?.(handle).catch(() => undefined);
  }
}

/**
 * Stops the gates listed in earlier attempts' ledgers that still run, and deletes the ledgers: a worker killed while its
 * gate ran leaves the gate running, agent code that nobody watches or times out. Returns the run ids it stopped. A
 * runtime that fails to answer keeps that ledger for the next attempt rather than failing this one.
 */
export async function stopLeftoverGates(
  runtimes: Partial<Record<AgentRuntime, AgentRuntimeDriver>>,
  ledgers: string[],
  runDir: (runId: string) => string,
): Promise<string[]> {
  const stopped: string[] = [];
  for (const ledger of ledgers) {
    let runIds: string[];
    try {
      runIds = readFileSync(ledger, 'utf8').split('\n').filter(Boolean);
    } catch {
      continue; // that attempt started no gate, or ended and deleted its ledger
    }
    let answered = true;
    for (const runId of runIds) {
      const handle = readHandle(runDir(runId));
      const driver = handle && runtimes[handle.runtime];
      if (!handle || !driver) continue;
      try {
        if ((await driver.status(handle, runDir(runId))).state !== 'running') continue;
        await driver.stop(handle, STOP_GRACE_MS);
        await driver.remove?.(handle).catch(() => undefined);
        stopped.push(runId);
      } catch (err) {
        answered = false;
        log.warn('could not stop a gate an earlier attempt left running; the next attempt tries again', {
          runId,
          error: String(err),
        });
      }
    }
    if (answered) rmSync(ledger, { force: true });
  }
  return stopped;
}

/**
 * Runs gates in order and stops at the first failure. `key` makes the gate runs of one activity attempt unique:
 * a retried merge builds a new candidate and must run its gates anew, never adopt an earlier (killed) run.
 */
export async function runGates(
  driver: AgentRuntimeDriver,
  gates: string[],
  key: string,
  base: GateLaunch,
  timeoutMs: number,
): Promise<GateResult[]> {
  const results: GateResult[] = [];
  for (const [i, gate] of gates.entries()) {
    const result = await runGate(driver, gate, `${key}-g${i + 1}`, base, timeoutMs);
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
