/**
 * Issue 11, item 7: no payload can pass Temporal's 2 MB limit (a workflow task that produces one fails and is retried
 * forever: the bead, the merge request or the refinery is wedged). The caps of domain/caps.ts at the places text
 * enters — and the biggest payloads built from the largest texts the schemas allow, in the worst encoding — checked
 * here; a real merge of a branch that conflicts in 50,000 files yields a bounded outcome; a refinery's queue (carried
 * into every continue-as-new) is bounded. Before this change that conflict listed every path twice in the merge
 * activity's result (and then in the bead's input to every later run), and the queue grew without bound.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMergeActivities } from '../activities/merge';
import { ProcessRuntime } from '../agents/process-runtime';
import { MAX_CHECKPOINT, MAX_TEXT } from '../domain/bead';
import {
  appendFeedback,
  CAPS,
  capList,
  capText,
  keepNewest,
  listText,
  MAX_JSON_BYTES_PER_CHAR,
  PAYLOAD_LIMIT_BYTES,
  utf8Bytes,
} from '../domain/caps';
import { ConvoySpec, convoySizeProblem, planConvoy } from '../domain/convoy';
import { EscalationInput } from '../domain/escalation';
import { enqueueSignal, refineryStateQuery, withdrawSignal } from '../domain/messages';
import { refineryStart } from '../domain/starts';
import { assessPullRequest, boundSnapshot, type PullRequestSnapshot } from '../domain/forge';
import { type CandidateResult, conflictOutcome, MergeTicket } from '../domain/refinery';
import { DEFAULT_AGENT_IMAGE, MAX_RIG_TEXT, RigConfig } from '../domain/rig';
import type { refineryWorkflow } from '../workflows/refinery';
import { createRepo } from './helpers/repo';
import { eventually, repoRoot, startTestTown, type TestTown } from './helpers/town';

/** Bytes of `value` as Temporal's default payload converter writes it (JSON, UTF-8). */
const payloadBytes = (value: unknown) => Buffer.byteLength(JSON.stringify(value), 'utf8');
/** The worst text of `n` characters for a payload: control characters, six bytes each in JSON. */
const worst = (n: number) => '\u0001'.repeat(n);

describe('capText, listText, keepNewest', () => {
  it('keep head and tail within the cap, say what was left out, and never split a surrogate pair', () => {
    const s = `${'a'.repeat(5000)}${'z'.repeat(5000)}`;
    const capped = capText(s, 1000);
    expect(capped.length).toBeLessThanOrEqual(1000);
    expect(capped.startsWith('aaaa')).toBe(true);
    expect(capped.endsWith('zzzz')).toBe(true);
    expect(capped).toMatch(/\[\d+ characters omitted\]/);
    expect(capText('short', 1000)).toBe('short');
    const emoji = '😀'.repeat(1000);
    for (const max of [100, 101, 102, 103, 5]) {
      const c = capText(emoji, max);
      expect(c.length).toBeLessThanOrEqual(max);
      expect(Buffer.from(c, 'utf8').toString('utf8')).toBe(c);
      expect(c).not.toMatch(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/);
    }
  });

  it('list at most n items with the count of the rest', () => {
    expect(listText(['a', 'b', 'c'], 5)).toBe('a, b, c');
    expect(listText(['a', 'b', 'c', 'd'], 2)).toBe('a, b … and 2 more');
    expect(capList([1, 2, 3], 1)).toEqual({ shown: [1], more: 2 });
    expect(keepNewest(['old', 'mid', 'new'], 6)).toEqual(['mid', 'new']);
    expect(keepNewest(['x'.repeat(100)], 50)[0]!.length).toBeLessThanOrEqual(50);
  });
});

describe('a conflict', () => {
  it('names at most CAPS.conflictPaths paths and counts the rest (the merge activity builds its outcome with this)', () => {
    const paths = Array.from({ length: 50_000 }, (_, i) => `src/module-${i}/${'deep/'.repeat(40)}file-${i}.ts`);
    const outcome = conflictOutcome(paths, 'main');
    expect(outcome.paths).toHaveLength(CAPS.conflictPaths);
    expect(outcome.feedback).toContain(`… and ${50_000 - CAPS.conflictPaths} more.`);
    expect(outcome.feedback.length).toBeLessThanOrEqual(CAPS.conflictPaths * (CAPS.name + 2) + 500);
    expect(conflictOutcome(['shared.txt'], 'main').feedback).toBe(
      'Your branch conflicts with main in: shared.txt.\nMerge origin/main into your branch, resolve the conflicts, commit, and call gt done again.',
    );
  });

  describe('in 50,000 files, merged for real', () => {
    let home: string | undefined;
    const savedHome = process.env.GT_HOME;
    beforeAll(() => {
      home = mkdtempSync(join(tmpdir(), 'gt-caps-home-'));
      process.env.GT_HOME = home;
    });
    afterAll(() => {
      if (savedHome === undefined) delete process.env.GT_HOME;
      else process.env.GT_HOME = savedHome;
    });

    it(
      'comes back from the merge activity as a bounded outcome, and the target does not move',
      { timeout: 600_000 },
      async () => {
        const FILES = 50_000;
        const repo = await createRepo();
        const base = await repo.sha();
        // Both sides add the same 50,000 paths with different content (add/add conflicts), written by fast-import:
        // no working tree of 50,000 files is needed to make them.
        const side = (ref: string, label: string) => {
          const files = Array.from({ length: FILES }, (_, i) => {
            const data = `${label} ${i}\n`;
            return `M 100644 inline wide/d${i % 100}/file-${i}.txt\ndata ${Buffer.byteLength(data)}\n${data}`;
          });
          return `commit ${ref}\ncommitter Test <t@example.com> 1700000000 +0000\ndata ${label.length}\n${label}\nfrom ${base}\n${files.join('')}\n`;
        };
        execFileSync('git', ['fast-import', '--quiet'], {
          cwd: repo.origin,
          input: side('refs/heads/main', 'target') + side('refs/heads/gt/wide', 'branch'),
          maxBuffer: 64 * 1024 * 1024,
        });
        const target = await repo.sha();
        const headSha = await repo.sha('gt/wide');

        const rig = RigConfig.parse({ name: 'wide', repo: repo.origin, agent: 'true' });
        const ticket = MergeTicket.parse({
          mrId: 'mr:wide:1',
          beadId: 'wide',
          round: 1,
          title: 'wide',
          branch: 'gt/wide',
          headSha,
          targetBranch: 'main',
          enqueuedAt: 0,
        });
        const { mergeCandidate } = createMergeActivities({
          gtHome: home!,
          gtBinDir: join(repoRoot, 'bin'),
          runtimes: { process: new ProcessRuntime() },
        });
        const result: CandidateResult = await new MockActivityEnvironment().run(mergeCandidate, {
          rig,
          tickets: [ticket],
        });

        expect(result.kind).toBe('excluded');
        if (result.kind !== 'excluded' || result.outcome.kind !== 'conflict')
          throw new Error(`expected a conflict, got ${JSON.stringify(result).slice(0, 500)}`);
        expect(result.outcome.paths).toHaveLength(CAPS.conflictPaths);
        expect(result.outcome.feedback).toContain(`… and ${FILES - CAPS.conflictPaths} more.`);
        expect(payloadBytes(result)).toBeLessThan(64 * 1024);
        expect(await repo.sha()).toBe(target);
      },
    );
  });
});

describe('feedback a bead accumulates', () => {
  it('stays bounded after any number of rounds of the largest feedback, keeping the newest round whole', () => {
    let feedback: string[] = [];
    for (let round = 1; round <= 1000; round++) {
      feedback = appendFeedback(feedback, `[conflict] round ${round} ${worst(MAX_TEXT * 3)}`);
      expect(feedback).toHaveLength(round);
      expect(feedback.reduce((n, f) => n + f.length, 0)).toBeLessThanOrEqual(CAPS.feedbackTotal);
      expect(feedback[round - 1]!.startsWith(`[conflict] round ${round} `)).toBe(true);
      expect(feedback[round - 1]!.length).toBeGreaterThan(CAPS.feedback - 10);
      expect(feedback[round - 1]!.length).toBeLessThanOrEqual(CAPS.feedback);
    }
    expect(payloadBytes(feedback)).toBeLessThan(CAPS.feedbackTotal * MAX_JSON_BYTES_PER_CHAR + 1000 * 60);
  });

  it("leaves the biggest input a run gets (rig, bead, feedback, checkpoints, messages) well below Temporal's limit", () => {
    let feedback: string[] = [];
    for (let round = 1; round <= 20; round++) feedback = appendFeedback(feedback, worst(MAX_TEXT));
    const gates = Array.from({ length: 15 }, () => worst(4000));
    const rig = RigConfig.parse({
      name: 'r',
      repo: '/r',
      agent: worst(1000),
      gates,
      env: { A: worst(MAX_RIG_TEXT - 15 * 4000 - 1000 - 2 - 1 - DEFAULT_AGENT_IMAGE.length) },
    });
    const input = {
      rig,
      bead: {
        id: 'b'.repeat(63),
        title: worst(200),
        description: worst(MAX_TEXT),
        acceptance: worst(MAX_TEXT),
        priority: 2,
      },
      feedback,
      checkpoints: keepNewest(
        Array.from({ length: 50 }, () => worst(MAX_CHECKPOINT)),
        CAPS.checkpointsTotal,
      ),
      messages: keepNewest(
        Array.from({ length: 20 }, () => worst(MAX_CHECKPOINT)),
        CAPS.messagesTotal,
      ),
    };
    expect(payloadBytes(input)).toBeLessThan(PAYLOAD_LIMIT_BYTES * 0.75);
  });
});

describe('a pull request snapshot', () => {
  it('keeps its text within CAPS.forgeTotal and its verdict whole, however many long comments GitHub returns', () => {
    const head = 'a'.repeat(40);
    const long = '評'.repeat(65_536);
    const pr: PullRequestSnapshot = {
      number: 7,
      url: 'https://github.com/acme/app/pull/7',
      state: 'open',
      merged: false,
      headSha: head,
      mergeable: true,
      reviews: Array.from({ length: 100 }, (_, i) => ({
        author: `r${i}`,
        state: i === 99 ? 'CHANGES_REQUESTED' : 'COMMENTED',
        body: long,
        commitId: head,
      })),
      threads: Array.from({ length: 100 }, () => ({
        resolved: false,
        outdated: false,
        comments: Array.from({ length: 20 }, () => ({ author: 'c', body: long, path: long, commitId: head })),
      })),
      checks: Array.from({ length: 200 }, (_, i) => ({ name: `check ${i}`, state: 'success' as const, detail: long })),
    };
    const bounded = boundSnapshot(pr);
    expect(payloadBytes(bounded)).toBeLessThan(PAYLOAD_LIMIT_BYTES / 2);
    const verdict = assessPullRequest(bounded, head);
    expect(verdict).toMatchObject({ kind: 'rework', outcome: { kind: 'changes_requested' } });
    if (verdict.kind === 'rework') expect(verdict.outcome.feedback.length).toBeLessThanOrEqual(CAPS.feedback);
    expect(assessPullRequest(pr, head).kind).toBe(verdict.kind);
  });
});

describe('a refinery queue', () => {
  let t: TestTown;
  beforeAll(async () => {
    t = await startTestTown();
  });
  afterAll(async () => {
    await t?.stop();
  });

  it('holds at most its bound (it rides in every continue-as-new); a ticket that found it full is taken when announced again', async () => {
    const rig = RigConfig.parse({ name: 'qcap', repo: '/nonexistent', agent: 'true' });
    const start = refineryStart({ taskQueue: t.taskQueue, input: { rig, paused: true, maxQueue: 2 } });
    const handle = await t.client.workflow.start<typeof refineryWorkflow>(start.workflowType, start.options);
    try {
      const ticket = (b: string) =>
        MergeTicket.parse({
          mrId: `mr:${b}:1`,
          beadId: b,
          round: 1,
          title: b,
          branch: `gt/${b}`,
          headSha: 'a'.repeat(40),
          targetBranch: 'main',
          enqueuedAt: 0,
        });
      const waiting = async () => (await handle.query(refineryStateQuery)).queue.map((q) => q.beadId);
      for (const b of ['q1', 'q2', 'q3']) await handle.signal(enqueueSignal, ticket(b));
      // Signals are handled in order: q3 found the queue full before the withdrawal made room.
      await handle.signal(withdrawSignal, { mrId: 'mr:q1:1', headSha: 'a'.repeat(40) });
      await eventually(async () => JSON.stringify(await waiting()) === '["q2"]', 30_000, 'q1 withdrawn, q3 not taken');
      // What its merge request does every REANNOUNCE_MS: announced again, it is taken (it was never marked seen).
      await handle.signal(enqueueSignal, ticket('q3'));
      await eventually(
        async () => JSON.stringify(await waiting()) === '["q2","q3"]',
        30_000,
        'q3 taken when announced again',
      );
    } finally {
      await handle.terminate('test done');
    }
  });
});

describe("a convoy's plan", () => {
  it('is refused by its size in bytes, which its character budget does not bound', () => {
    const plan = (text: string) => {
      const spec = ConvoySpec.parse({
        id: 'big',
        title: 'big',
        rig: 'r',
        beads: Array.from({ length: 100 }, (_, i) => ({ id: `b${i}`, title: `bead ${i}`, description: text })),
      });
      return planConvoy({ ...spec, id: 'big' }, false, new Date(0).toISOString());
    };
    // 900,000 characters pass the character budget either way; in CJK they are 2.7 MB.
    expect(convoySizeProblem(plan('評'.repeat(9_000)))).toMatch(
      /^the convoy's plan takes 27\d{5} bytes; at most 1000000 are allowed \(non-ASCII text/,
    );
    expect(convoySizeProblem(plan('x'.repeat(9_000)))).toBeUndefined();
    expect(utf8Bytes('a評😀')).toBe(Buffer.byteLength('a評😀'));
  });
});

describe("a rig's settings", () => {
  it('are refused past their text budget or env count, with a message that says what to do', () => {
    const rig = { name: 'big', repo: '/r', agent: 'true' };
    expect(
      RigConfig.safeParse({ ...rig, gates: Array.from({ length: 20 }, () => 'x'.repeat(4000)) }).error?.issues[0]
        ?.message,
    ).toBe(
      `a rig's settings hold at most ${MAX_RIG_TEXT} characters of text (gates, agent and reviewer commands, env): keep long scripts in the repository and call them`,
    );
    const env = Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`V${i}`, '1']));
    expect(RigConfig.safeParse({ ...rig, env }).error?.issues[0]?.message).toBe(
      'a rig passes at most 100 environment variables to its agents',
    );
    expect(RigConfig.safeParse({ ...rig, gates: ['npm test'], env: { A: '1' } }).success).toBe(true);
  });
});

describe('an escalation reason', () => {
  it('is shortened, never refused: the failure it reports must still be escalated', () => {
    const parsed = EscalationInput.parse({
      id: 'bead-x',
      severity: 'high',
      source: 'bead',
      reason: `bead x failed: ${'e'.repeat(100_000)}`,
    });
    expect(parsed.reason.length).toBeLessThanOrEqual(MAX_TEXT);
    expect(parsed.reason.startsWith('bead x failed: ')).toBe(true);
  });
});
