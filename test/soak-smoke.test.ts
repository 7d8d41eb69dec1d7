/**
 * The chaos soak, small: twelve beads on two real `gt worker` hosts and a Temporal dev server of its own, with every
 * fault kind the dev server takes injected once (hosts killed with their agents, the server killed and restarted, a host paused past its
 * heartbeat timeout, stale messages replayed, slow gates), and every invariant holding. `npm run soak` is the long run.
 */
import { describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { faultKindsOf, runSoak, type FaultKind } from '../bench/soak/soak';

// On the dev server (fast to start): every fault kind but restart-postgres, which test/prod-stack.test.ts covers.
const ORDER: FaultKind[] = ['slow-gates', ...faultKindsOf('dev').filter((k) => k !== 'slow-gates')];

describe('chaos soak (smoke)', () => {
  it(
    'loses, doubles and lets through nothing while every kind of fault is injected',
    { timeout: 600_000 },
    async () => {
      const log: string[] = [];
      const result = await runSoak({
        stack: 'dev',
        beads: 12,
        width: 4,
        hosts: 2,
        maxPolecats: 4,
        // Every fault falls while the convoy runs (cycle: its last bead waits for the last fault); short gaps.
        faults: ORDER,
        faultOrder: 'cycle',
        faultEvery: [2, 3],
        slowGatesMs: 5_000,
        flakyPercent: 10,
        seed: 7,
        deadlineMs: 8 * 60_000,
        workflowBundle: inject('workflowBundlePath'),
        log: (line) => log.push(line),
      });
      const context = `${JSON.stringify(result.invariants)}\n${JSON.stringify(result.notMerged)}\n${log.join('\n')}`;
      expect(
        result.faults.map((f) => f.kind),
        context,
      ).toEqual(ORDER);
      expect(result.staleReplays.length, context).toBeGreaterThan(0);
      expect(result.invariants, context).toEqual({
        beadsLost: [],
        beadsMergedTwice: [],
        concurrentRuns: [],
        ungatedTargetTrees: [],
        staleMessagesAccepted: [],
        stuckWorkflows: [],
      });
      expect(result.unexpectedExits, context).toEqual([]);
      // The soak's observer never queries while faults fall (a query then can trigger an SDK bug: known-issues.md).
      expect(result.queriesDuringChaos, context).toBe(0);
      expect(result.convoyStatus, context).toBe('landed');
      expect(result.figures.merged).toBe(12);
    },
  );
});
