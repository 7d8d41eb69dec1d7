/**
 * The runs whose `gt done` this worker process's gateway saw accepted by their workflow, kept for the host's
 * supervision: when such a run's agent exits, `superviseAgentRun` publishes its branch before it returns, one
 * activity and one workflow task fewer between `gt done` and the merge request (docs/performance.md).
 *
 * Only the gateway adds to it, and only with the run id of a verified run token whose `gt done` the workflow accepted:
 * an agent can no more cause a publish through it than by calling `gt done`, which publishes its branch anyway. It is
 * a hint, never the record: a run missing here (its `gt done` went through another worker's gateway or a gateway that
 * restarted since, or its agent exited before the answer came) is published by its workflow as before. Bounded: the
 * oldest runs are forgotten first.
 */
export class DoneRuns {
  private readonly runs = new Set<string>();

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
}
