/**
 * The runs whose `gt done` this worker process's gateway saw accepted by their workflow, kept for the host's
 * supervision: when such a run's agent exits, `superviseAgentRun` publishes its branch before it returns, one
 * activity and one workflow task fewer between `gt done` and the merge request (docs/performance.md); should it not
 * exit within the grace, the supervision stops it. And the runs this process supervises right now: the gateway tells
 * a run's workflow that its host times the grace (domain/bead.ts DoneUpdate) only for those.
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

  constructor(private readonly max = 4096) {}

  add(runId: string): void {
    this.runs.delete(runId);
    this.runs.add(runId);
    for (const oldest of this.runs) {
      if (this.runs.size <= this.max) break;
      this.runs.delete(oldest);
    }
  }

  /** Whether the run's `gt done` was accepted through this gateway; forgets it (a run ends once). */
  take(runId: string): boolean {
    return this.runs.delete(runId);
  }

  /** Whether the run's `gt done` was accepted through this gateway (and its exit not yet taken). */
  seen(runId: string): boolean {
    return this.runs.has(runId);
  }

  /** A supervision of the run starts in this process; call the returned function as it ends. */
  supervise(runId: string): () => void {
    this.supervised.set(runId, (this.supervised.get(runId) ?? 0) + 1);
    return () => {
      const n = (this.supervised.get(runId) ?? 1) - 1;
      if (n > 0) this.supervised.set(runId, n);
      else this.supervised.delete(runId);
    };
  }

  /** Whether a supervision of the run runs in this process. */
  supervises(runId: string): boolean {
    return this.supervised.has(runId);
  }
}
