/**
 * host/done-runs.ts: what the gateway and the supervision of one worker process share — the runs whose gt done was
 * accepted here, and the runs supervised here (the gateway tells a workflow its host times the exit grace only then).
 */
import { describe, expect, it } from 'vitest';
import { DoneRuns } from '../host/done-runs';

describe('DoneRuns', () => {
  it('keeps a done run seen until its exit takes it, once', () => {
    const runs = new DoneRuns();
    runs.add('b/r1/a1');
    expect(runs.seen('b/r1/a1')).toBe(true);
    expect(runs.take('b/r1/a1')).toBe(true);
    expect(runs.seen('b/r1/a1')).toBe(false);
    expect(runs.take('b/r1/a1')).toBe(false);
  });

  it('tells a run’s listener once, as its gt done is accepted, and no more once it stopped listening', () => {
    const runs = new DoneRuns();
    const heard: string[] = [];
    runs.onAccepted('b/r1/a1', () => heard.push('a1'));
    const stop = runs.onAccepted('b/r1/a2', () => heard.push('a2'));
    runs.add('b/r1/a3');
    expect(heard).toEqual([]);
    runs.add('b/r1/a1');
    runs.add('b/r1/a1');
    stop();
    runs.add('b/r1/a2');
    expect(heard).toEqual(['a1']);
    expect(runs.seen('b/r1/a2')).toBe(true);
  });

  it('forgets the oldest done runs beyond its bound', () => {
    const runs = new DoneRuns(2);
    for (const id of ['b/r1/a1', 'b/r1/a2', 'b/r1/a3']) runs.add(id);
    expect([runs.seen('b/r1/a1'), runs.seen('b/r1/a2'), runs.seen('b/r1/a3')]).toEqual([false, true, true]);
  });

  it('supervises a run while any of its supervisions runs (a retry may overlap the attempt it replaces)', () => {
    const runs = new DoneRuns();
    const first = runs.supervise('b/r1/a1');
    expect(runs.supervisions('b/r1/a1')).toBe(1);
    const retry = runs.supervise('b/r1/a1');
    expect(runs.supervises('b/r1/a1')).toBe(true);
    expect(runs.supervisions('b/r1/a1')).toBe(2);
    first();
    expect(runs.supervises('b/r1/a1')).toBe(true);
    expect(runs.supervisions('b/r1/a1')).toBe(1);
    retry();
    expect(runs.supervises('b/r1/a1')).toBe(false);
    expect(runs.supervisions('b/r1/a1')).toBe(0);
    expect(runs.supervises('b/r1/a2')).toBe(false);
  });

  it("lets only the newest supervision attempt begun here take the run's exit", () => {
    // Attempt 1 froze past its heartbeat timeout and woke beside its retry: the server dropped its answer, so the
    // branch and ticket it would publish and hand over at the exit would go unheard by the bead (the chaos soak's
    // merged-twice bead). Its retry takes the exit instead.
    const runs = new DoneRuns();
    const first = runs.supervise('b/r1/a1', 1);
    const retry = runs.supervise('b/r1/a1', 2);
    runs.add('b/r1/a1');
    expect(runs.take('b/r1/a1', 1)).toBe(false);
    first();
    expect(runs.take('b/r1/a1', 1), 'the older attempt, after it ended').toBe(false);
    expect(runs.take('b/r1/a1', 2)).toBe(true);
    expect(runs.take('b/r1/a1', 2), 'a run ends once').toBe(false);
    retry();
    // A retry begun after the attempt it replaces ended is the newest too.
    runs.supervise('b/r2/a1', 1)();
    runs.supervise('b/r2/a1', 2);
    runs.add('b/r2/a1');
    expect(runs.take('b/r2/a1', 2)).toBe(true);
  });

  it('counts a run launched here as supervised until its supervision has started and ended', () => {
    const runs = new DoneRuns();
    runs.launched('b/r1/a1');
    expect(runs.supervises('b/r1/a1')).toBe(true);
    const ended = runs.supervise('b/r1/a1');
    expect(runs.supervises('b/r1/a1')).toBe(true);
    ended();
    expect(runs.supervises('b/r1/a1')).toBe(false);
  });
});
