/**
 * Issue 12: the town's counters (worker/metrics.ts) as a real `gt worker` process exports them on its Prometheus
 * endpoint, counted by the real bead, refinery and escalation code during real runs: an agent that crashes once
 * (a redispatch), a bead whose gates fail once (a rework), a bead whose gates never pass (rework until maxRounds, then
 * an escalation). Each scenario has a rig of its own, so every expected value is exact; docs/observability.md names
 * the counters and their tags.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { Town } from '../client/town';
import type { BeadResult } from '../domain/bead';
import { createRepo } from './helpers/repo';
import { freePort, startChild, type Child } from './helpers/processes';
import { agentScript, eventually, FAST_POLICY, gtBin } from './helpers/town';
import { temporalAddress } from './helpers/server';

type Labels = Record<string, string>;

/** The samples of one metric in a Prometheus text exposition, with their labels. */
function samples(text: string, name: string): { labels: Labels; value: number }[] {
  const out: { labels: Labels; value: number }[] = [];
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${name}\\{([^}]*)\\} (\\S+)$`).exec(line);
    if (!m) continue;
    const labels = Object.fromEntries([...m[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1]!, l[2]!]));
    out.push({ labels, value: Number(m[2]) });
  }
  return out;
}

/** Sum of a counter over every sample whose labels include `match` (the SDK adds workflow/activity type labels). */
const total = (text: string, name: string, match: Labels) =>
  samples(text, name)
    .filter((s) => Object.entries(match).every(([k, v]) => s.labels[k] === v))
    .reduce((n, s) => n + s.value, 0);

let worker: Child;
let metricsUrl: string;
let town: Town;
let connection: Connection;
const testDir = mkdtempSync(join(tmpdir(), 'gt-counters-'));

beforeAll(async () => {
  const metricsPort = await freePort();
  metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
  const taskQueue = `counters-${process.pid}`;
  worker = startChild(gtBin, ['worker', '--gateway-port', '0'], {
    ...process.env,
    TEMPORAL_ADDRESS: temporalAddress(),
    TEMPORAL_NAMESPACE: inject('temporalNamespace'),
    GT_TASK_QUEUE: taskQueue,
    GT_HOME: mkdtempSync(join(tmpdir(), 'gt-home-counters-')),
    GT_HOST_ID: 'counters-host',
    GT_WORKFLOW_BUNDLE: inject('workflowBundlePath'),
    GT_METRICS_ADDRESS: `127.0.0.1:${metricsPort}`,
    GT_LOG_LEVEL: 'WARN',
  });
  await worker.waitFor(/gateway http:\/\/127\.0\.0\.1:\d+/);
  connection = await Connection.connect({ address: temporalAddress() });
  town = new Town(new Client({ connection, namespace: inject('temporalNamespace') }), taskQueue);
});
afterAll(async () => {
  await worker?.stop('SIGTERM');
  await connection?.close();
});

/** Adds a rig and works one bead on it to its end. */
async function workBead(
  rig: string,
  options: { agent: string; gates?: string[]; maxRounds?: number },
): Promise<BeadResult> {
  const repo = await createRepo();
  await town.addRig({
    name: rig,
    repo: repo.origin,
    agent: options.agent,
    gates: options.gates ?? [],
    env: { TEST_DIR: testDir },
    policy: { ...FAST_POLICY, maxRounds: options.maxRounds ?? FAST_POLICY.maxRounds },
  });
  const { handle } = await town.sling(rig, { id: `${rig}-1`, title: `Counted work on ${rig}` });
  return handle.result();
}

/** The counters of one rig, read from the worker's endpoint until they reach `expected` (or the last values seen). */
async function countersOf(rig: string, expected: Record<string, number>): Promise<Record<string, number>> {
  let seen: Record<string, number> = {};
  const read = async () => {
    const text = await (await fetch(metricsUrl)).text();
    seen = Object.fromEntries(
      Object.keys(expected).map((key) => {
        const [name, ...tags] = key.split(' ');
        const match = Object.fromEntries(tags.map((t) => t.split('=') as [string, string]));
        return [key, total(text, name!, { rig, ...match })];
      }),
    );
    return Object.entries(expected).every(([k, v]) => seen[k] === v);
  };
  // Counters reach the exporter with the worker's next flush after the workflow task that counted them.
  await eventually(read, 15_000, `counters of ${rig}`).catch(() => undefined);
  return seen;
}

describe('town counters from real runs on a gt worker', () => {
  it('count a redispatch after an agent crashed without gt done, and no rework', async () => {
    const result = await workBead('ctr-redispatch', { agent: agentScript('crash-first') });
    expect(result.status).toBe('closed');
    const expected = {
      gt_runs_started_total: 2,
      gt_redispatches_total: 1,
      gt_rework_total: 0,
      gt_merges_total: 1,
      gt_escalations_total: 0,
    };
    expect(await countersOf('ctr-redispatch', expected)).toEqual(expected);
  });

  it('count a rework (tagged with its kind) when the gates sent a bead back once, and no redispatch', async () => {
    const result = await workBead('ctr-rework', {
      agent: agentScript('refinery-fix-gate'),
      gates: ['test ! -f work/BROKEN'],
    });
    expect(result.status).toBe('closed');
    const expected = {
      gt_runs_started_total: 2,
      gt_redispatches_total: 0,
      'gt_rework_total kind=gates_failed': 1,
      gt_rework_total: 1,
      gt_merges_total: 1,
      gt_escalations_total: 0,
    };
    expect(await countersOf('ctr-rework', expected)).toEqual(expected);
  });

  it('count the rounds sent back to a polecat and one escalation when a bead runs out of rounds', async () => {
    const result = await workBead('ctr-exhausted', { agent: agentScript('good'), gates: ['false'], maxRounds: 2 });
    expect(result.status).toBe('failed');
    // Two rounds ran; only the first one's merge request went back to a polecat (the second ended the bead), which
    // is what gt_rework counts ("merge requests sent back to a polecat", docs/observability.md).
    const expected = {
      gt_runs_started_total: 2,
      gt_redispatches_total: 0,
      'gt_rework_total kind=gates_failed': 1,
      gt_merges_total: 0,
      'gt_escalations_total severity=high source=bead': 1,
      gt_escalations_total: 1,
    };
    expect(await countersOf('ctr-exhausted', expected)).toEqual(expected);
  });
});
