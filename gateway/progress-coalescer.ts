/**
 * Progress reports from agents, coalesced per run before they reach a workflow (issue 14 item 6). A chatty agent may
 * call `gt progress` thousands of times; each recorded report is an update in its workflow's history. The gateway
 * forwards at most one report per run per PROGRESS_INTERVAL_MS; a report that comes sooner replaces the one waiting
 * (only the newest is kept) and is forwarded when the interval has passed, so the latest report always becomes visible,
 * at most one interval late, and a run's history grows by at most one progress update per interval.
 *
 * The bead workflow enforces the same bound itself (its progress validator refuses a report sooner than
 * PROGRESS_MIN_GAP_MS after the last one, leaving no history): a report refused that way — another gateway, a restarted
 * one — waits here like any other. State is per process and in memory: a report waiting when the gateway stops is
 * forwarded then, within the gateway's close grace (gateway/server.ts), or lost; its predecessor stays visible.
 */
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { PROGRESS_INTERVAL_MS } from '../domain/progress';
import { Failure } from '../domain/failures';

/** The workflow refused a report as too soon after the previous one (bead-messages.ts's progress validator). */
export const isTooSoon = (err: unknown) =>
  err instanceof WorkflowUpdateFailedError &&
  err.cause instanceof ApplicationFailure &&
  err.cause.type === Failure.ProgressTooSoon;

interface RunState {
  lastSentAt: number;
  pending?: () => Promise<unknown>;
  timer?: NodeJS.Timeout;
}

export class ProgressCoalescer {
  private readonly runs = new Map<string, RunState>();

  constructor(
    readonly intervalMs = PROGRESS_INTERVAL_MS,
    private readonly onDropped: (runId: string, err: unknown) => void = () => undefined,
  ) {}

  /**
   * Forwards `send` now when the run's interval has passed (its answer is returned), otherwise keeps it as the run's
   * newest report and answers `undefined`: it will be forwarded when the interval has passed.
   */
  async submit(runId: string, send: () => Promise<unknown>): Promise<unknown> {
    const now = Date.now();
    this.prune(now);
    const s = this.runs.get(runId) ?? { lastSentAt: -Infinity };
    this.runs.set(runId, s);
    if (!s.timer && now - s.lastSentAt >= this.intervalMs) {
      s.lastSentAt = now;
      try {
        return await send();
      } catch (err) {
        if (!isTooSoon(err)) throw err;
      }
    }
    s.pending = send;
    this.schedule(runId, s);
    return undefined;
  }

  /** Forwards every waiting report now (best effort) and stops the timers. */
  async close(): Promise<void> {
    const waiting = [...this.runs.entries()].filter(([, s]) => s.pending);
    for (const [, s] of this.runs) clearTimeout(s.timer);
    this.runs.clear();
    await Promise.all(waiting.map(([runId, s]) => s.pending!().catch((err: unknown) => this.onDropped(runId, err))));
  }

  private schedule(runId: string, s: RunState): void {
    if (s.timer) return;
    const wait = Math.max(0, s.lastSentAt + this.intervalMs - Date.now());
    s.timer = setTimeout(() => void this.flush(runId, s), wait);
    s.timer.unref();
  }

  private async flush(runId: string, s: RunState): Promise<void> {
    s.timer = undefined;
    const send = s.pending;
    if (!send) return;
    s.pending = undefined;
    s.lastSentAt = Date.now();
    try {
      await send();
    } catch (err) {
      // Refused as too soon (the workflow counts from its own clock): try again after another interval, unless a
      // newer report took its place meanwhile. Anything else (the run ended, the workflow is gone) drops it.
      if (isTooSoon(err)) {
        s.pending ??= send;
        this.schedule(runId, s);
      } else this.onDropped(runId, err);
    }
  }

  /** Runs with nothing waiting and no report for an interval are forgotten: the map holds active runs only. */
  private prune(now: number): void {
    for (const [runId, s] of this.runs)
      if (!s.timer && !s.pending && now - s.lastSentAt >= this.intervalMs) this.runs.delete(runId);
  }
}
