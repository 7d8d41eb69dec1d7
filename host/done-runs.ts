/**
 * The runs whose `gt done` this worker process's gateway saw accepted by their workflow, kept for the host's
 * supervision: when such a run's agent exits, `superviseAgentRun` publishes its branch before it returns, one
 * activity and one workflow task fewer between `gt done` and the merge request (docs/performance.md); should it not
 * exit within the grace, the supervision stops it. And the runs this process supervises, or launched and will
 * supervise (the supervision starts a hand-off after the agent, which may call `gt done` first): the gateway tells a
 * run's workflow that its host times the grace (domain/bead.ts DoneUpdate) only for those. The supervisions are
 * counted: a supervision attempt the server gave up leaves the agent to a retry running beside it
 * (activities/agent-runs.ts).
 *
 * Only the gateway adds to it, and only with the run id of a verified run token whose `gt done` the workflow accepted:
 * an agent can no more cause a publish through it than by calling `gt done`, which publishes its branch anyway. It is
 * a hint, never the record: a run missing here (its `gt done` went through another worker's gateway or a gateway that
 * restarted since, or its agent exited before the answer came) is published by its workflow as before. Bounded: the
 * oldest runs are forgotten first.
 */
export class DoneRuns {
  private readonly runs = new Set<string>();
  /** Run id → how many supervisions of it run in this process (a retry may overlap the attempt it replaces). */
  private readonly supervised = new Map<string, number>();
  /** Runs whose agent launchRun started here, until their supervision starts (bounded: a run never supervised). */
  private readonly launchedHere = new Set<string>();
  /** Run id → what its supervision does as the run's `gt done` is accepted (onAccepted); removed as it ends. */
  private readonly listeners = new Map<string, () => void>();
  /**
   * Run id → the newest attempt of its supervision begun in this process (bounded: the oldest runs forgotten first).
   * An older attempt still running beside it (frozen past its heartbeat timeout, then woken) is one the server gave
   * up on: its answer is dropped, so it must not take the run's exit, whose branch and ticket the bead would then never
   * hear of (take).
   */
  private readonly newestAttempt = new Map<string, number>();

  constructor(private readonly max = 4096) {}

  add(runId: string): void {
    this.keep(this.runs, runId);
    this.listeners.get(runId)?.();
  }

  /**
   * Calls `accepted` as the run's `gt done` is accepted through this gateway (at most once; a supervision begins the
   * import's first step then). Call the returned function to stop listening.
   */
  onAccepted(runId: string, accepted: () => void): () => void {
    const once = () => {
      this.listeners.delete(runId);
      accepted();
    };
    this.listeners.set(runId, once);
    return () => {
      if (this.listeners.get(runId) === once) this.listeners.delete(runId);
    };
  }

  /** launchRun started the run's agent here: its supervision comes next, on this host's queue. */
  launched(runId: string): void {
    this.keep(this.launchedHere, runId);
  }

  private keep(set: Set<string>, runId: string): void {
    set.delete(runId);
    set.add(runId);
    this.bound(set);
  }

  /** Forgets the oldest runs (first inserted) beyond `max`. */
  private bound(runs: Set<string> | Map<string, unknown>): void {
    for (const oldest of runs.keys()) {
      if (runs.size <= this.max) break;
      runs.delete(oldest);
    }
  }

  /**
   * Whether the run's `gt done` was accepted through this gateway; forgets it (a run ends once). Never for a
   * supervision `attempt` older than the newest begun here for the run.
   */
  take(runId: string, attempt?: number): boolean {
    if (attempt !== undefined && attempt < (this.newestAttempt.get(runId) ?? 0)) return false;
    return this.runs.delete(runId);
  }

  /** Whether the run's `gt done` was accepted through this gateway (and its exit not yet taken). */
  seen(runId: string): boolean {
    return this.runs.has(runId);
  }

  /** A supervision of the run (its `attempt`) starts in this process; call the returned function as it ends. */
  supervise(runId: string, attempt = 1): () => void {
    this.launchedHere.delete(runId);
    const newest = Math.max(attempt, this.newestAttempt.get(runId) ?? 0);
    this.newestAttempt.delete(runId);
    this.newestAttempt.set(runId, newest);
    this.bound(this.newestAttempt);
    this.supervised.set(runId, (this.supervised.get(runId) ?? 0) + 1);
    return () => {
      const n = (this.supervised.get(runId) ?? 1) - 1;
      if (n > 0) this.supervised.set(runId, n);
      else this.supervised.delete(runId);
    };
  }

  /** How many supervisions of the run run in this process (more than one while a retry overlaps its attempt). */
  supervisions(runId: string): number {
    return this.supervised.get(runId) ?? 0;
  }

  /** Whether a supervision of the run runs in this process, or comes next (launched here). */
  supervises(runId: string): boolean {
    return this.supervised.has(runId) || this.launchedHere.has(runId);
  }
}
