/**
 * A convoy bead's first run launched by the worker that starts the bead, ahead of the bead's own launch activity.
 *
 * As a convoy's worker starts a bead eagerly (its first workflow task handed to this very worker, so decided by this
 * code) whose first run is a single agent on this worker's host, it begins that run's launch here at once: the gate's
 * request, the worktree and the agent's start, the work `launchRunWhenGranted` does. The bead's first workflow task
 * schedules `launchRunWhenGranted` as before, on this host's queue; the activity takes the launch begun ahead for
 * exactly its input and answers with its result, instead of doing it again (docs/performance.md, the twenty-ninth
 * pass). The bead's first workflow task and the activity's hand-off then run beside the launch, not before it.
 *
 * Invariants:
 * - One agent per run id, as ever: the activity takes the launch or, for other settings, stops what it started and
 *   fails the attempt (the bead's next attempt is another run); a launch that failed leaves the activity to launch as
 *   a retry would, whose start-or-adopt finds anything it started.
 * - An agent launched ahead is not heard before its bead's launch took it: the gateway holds its requests
 *   (`heard`), so an agent no bead took can say nothing to any workflow. One not taken is stopped once its bead's
 *   workflow has closed, or after `ABANDON_AFTER_MS` in any case.
 * - Process-local: the launch, the activity that takes it and the gateway are this worker's.
 */
import { isDeepStrictEqual } from 'node:util';
import type { LaunchedRun, LaunchWhenGrantedInput } from './agent-runs';

type Parsed = ReturnType<typeof LaunchWhenGrantedInput.parse>;
export type LaunchAheadResult = LaunchedRun | { queued: true };

/** What the host's activities give the registry: the launch itself, and the stop of a launch nobody took. */
export interface AheadLauncher {
  /** The input as the activity will see it: through JSON (undefined fields dropped) and its schema (defaults). */
  normalize(raw: LaunchWhenGrantedInput): Parsed;
  launch(input: Parsed): Promise<LaunchAheadResult>;
  /** Stops the run's agent if it started, once its launch has ended; never fails (a failure is the host's to log). */
  abandon(runId: string): Promise<void>;
}

/** How long an agent launched ahead waits for its bead's launch before the gateway answers "try again". */
const HOLD_MS = 30_000;
/** How often a launch not taken yet looks whether its bead still runs. */
const CHECK_EVERY_MS = 30_000;
/** Stopped, whatever its bead does, once this long without being taken. */
const ABANDON_AFTER_MS = 10 * 60_000;

/**
 * How many runs each memory keeps: stopped runs the gateway goes on refusing (each was stopped too: this only closes
 * the stop's window), and runs whose bead's launch came first.
 */
const KEPT = 1_000;

/** The run's launch begun ahead was for other settings than the bead's own: stopped, the attempt fails. */
export class LaunchedOtherwise extends Error {}
/** The gateway's answer to an agent launched ahead and not taken: stopped, or (`later`) not taken yet. */
export class NotTaken extends Error {
  constructor(
    message: string,
    readonly later = false,
  ) {
    super(message);
  }
}

interface Ahead {
  input: Parsed;
  result: Promise<LaunchAheadResult>;
  /** Settles when the launch is taken (resolved) or abandoned (rejected): the gateway's hold. */
  heard: Promise<void>;
  hear(): void;
  refuse(err: Error): void;
  timer?: NodeJS.Timeout;
}

export interface LaunchesAheadOptions {
  /** Whether a workflow is still running (HostDeps.workflowRunning); undefined when the server cannot say. */
  workflowRunning?: (workflowId: string) => Promise<boolean | undefined>;
  checkEveryMs?: number;
  abandonAfterMs?: number;
  holdMs?: number;
}

export class LaunchesAhead {
  private launcher?: AheadLauncher;
  private readonly runs = new Map<string, Ahead>();
  /** Runs launched ahead and stopped, newest last: refused for good (a bead's next attempt is another run). */
  private readonly refused = new Map<string, NotTaken>();
  /** Runs whose bead's launch came first and found nothing begun: never begun after it (a second start). */
  private readonly launchedByBead = new Set<string>();

  constructor(private readonly options: LaunchesAheadOptions = {}) {}

  /** Called by the host's activities (activities/agent-runs.ts) of this process. */
  serve(launcher: AheadLauncher): void {
    this.launcher = launcher;
  }

  /**
   * Begins the launch of a run whose bead will schedule `launchRunWhenGranted` with exactly this input on this host.
   * False when no host of this process serves launches (nothing begun).
   */
  begin(raw: LaunchWhenGrantedInput): boolean {
    const { launcher } = this;
    if (!launcher) return false;
    const input = launcher.normalize(raw);
    if (this.runs.has(input.runId) || this.launchedByBead.has(input.runId)) return false;
    let hear!: () => void;
    let refuse!: (err: Error) => void;
    const heard = new Promise<void>((resolve, reject) => {
      hear = resolve;
      refuse = reject;
    });
    heard.catch(() => undefined); // refused before anyone asked
    const result = launcher.launch(input);
    result.catch(() => undefined); // the taker reads it
    const began = Date.now();
    const ahead: Ahead = { input, result, heard, hear, refuse };
    const check = async () => {
      if (this.runs.get(input.runId) !== ahead) return;
      const over = Date.now() - began >= (this.options.abandonAfterMs ?? ABANDON_AFTER_MS);
      const running = await this.options.workflowRunning?.(input.workflowId).catch(() => undefined);
      if (over || running === false) {
        if (this.runs.get(input.runId) !== ahead) return;
        this.runs.delete(input.runId);
        await this.drop(
          ahead,
          new NotTaken(`run ${input.runId} was launched ahead of its bead, which never took it; it was stopped`),
        );
        return;
      }
      arm();
    };
    const arm = () =>
      (ahead.timer = setTimeout(() => void check(), this.options.checkEveryMs ?? CHECK_EVERY_MS).unref());
    arm();
    this.runs.set(input.runId, ahead);
    return true;
  }

  /**
   * The launch begun ahead for this run (the activity's side), once: its result for exactly this input; for other
   * settings, a failure (LaunchedOtherwise) once what it started is stopped; undefined when none was begun.
   */
  take(input: Parsed): Promise<LaunchAheadResult> | undefined {
    const ahead = this.runs.get(input.runId);
    if (!ahead) {
      this.launchedByBead.add(input.runId);
      if (this.launchedByBead.size > KEPT) this.launchedByBead.delete(this.launchedByBead.values().next().value!);
      return undefined;
    }
    this.runs.delete(input.runId);
    clearTimeout(ahead.timer);
    if (isDeepStrictEqual(ahead.input, input)) {
      ahead.hear();
      return ahead.result;
    }
    const why = `run ${input.runId} was launched ahead with other settings than its bead's; it was stopped`;
    return this.drop(ahead, new LaunchedOtherwise(why)).then(() => Promise.reject(new LaunchedOtherwise(why)));
  }

  /**
   * For the gateway, before it forwards a run's request: at once for a run not launched ahead (or taken); for one
   * launched ahead, once its bead's launch took it. Rejects (NotTaken) for one stopped, or not taken within the hold.
   */
  async heard(runId: string): Promise<void> {
    const refused = this.refused.get(runId);
    if (refused) throw refused;
    const ahead = this.runs.get(runId);
    if (!ahead) return;
    let timer: NodeJS.Timeout | undefined;
    const holdMs = this.options.holdMs ?? HOLD_MS;
    try {
      await Promise.race([
        ahead.heard,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new NotTaken(`run ${runId} is not started by its bead yet; run the command again in a moment`, true),
              ),
            holdMs,
          );
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async drop(ahead: Ahead, why: Error): Promise<void> {
    const { runId } = ahead.input;
    this.refused.set(runId, new NotTaken(why.message));
    if (this.refused.size > KEPT) this.refused.delete(this.refused.keys().next().value!);
    ahead.refuse(why);
    await ahead.result.catch(() => undefined);
    await this.launcher?.abandon(ahead.input.runId);
  }
}
