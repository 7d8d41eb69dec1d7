/**
 * How often a run's progress is recorded (issue 14 item 6): the agent gateway forwards at most one report per run per
 * PROGRESS_INTERVAL_MS (gateway/progress-coalescer.ts), and the bead workflow refuses a report sooner than
 * PROGRESS_MIN_GAP_MS after the last one it recorded, so its history grows by at most one progress update (two events
 * and a workflow task) per run per 25 s, however chatty the agent. The gap is below the interval so that the
 * gateway's own pacing is never refused for a clock that runs slightly apart from workflow time.
 */
export const PROGRESS_INTERVAL_MS = 30_000;
export const PROGRESS_MIN_GAP_MS = 25_000;
