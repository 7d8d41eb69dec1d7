/**
 * domain/starts.ts: every workflow is started one way whoever starts it (the CLI, MCP, the convoy's and the bead's
 * activities, the tests) — the same id, attributes, summary and id policy. And the validation family: an update parsed
 * once by setValidatedUpdate (workflows/handlers.ts), parse-or-drop, parse-or-reject with its named failure type.
 * Pure: no server.
 */
import { ApplicationFailure, WorkflowIdReusePolicy, type SearchAttributePair } from '@temporalio/common';
import { describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { Failure, NON_RETRYABLE, RETRY } from '../domain/failures';
import { RigConfig } from '../domain/rig';
import {
  beadStart,
  convoyLandingStart,
  dispatchGateStart,
  escalationStart,
  mergeRequestStart,
  refineryStart,
  withSignal,
} from '../domain/starts';
import { parseOrDrop, parseOrReject } from '../domain/validation';

const captured: { handler?: (raw: unknown) => unknown; validator?: (raw: unknown) => void } = {};
vi.mock('@temporalio/workflow', async (original) => ({
  ...(await original<typeof import('@temporalio/workflow')>()),
  setHandler: (_def: unknown, handler: (raw: unknown) => unknown, options: { validator?: (raw: unknown) => void }) => {
    captured.handler = handler;
    captured.validator = options.validator;
  },
}));

const rig = RigConfig.parse({ name: 'r1', repo: '/repos/r1', agent: 'true' });
const attrs = (pairs: SearchAttributePair[] | undefined) =>
  Object.fromEntries((pairs ?? []).map((p) => [p.key.name, p.value]));
const formula = { name: 'work', version: 1 } as never;

describe('workflow starts (domain/starts.ts)', () => {
  it('starts a bead the same way alone, in a convoy and on retry (only the reuse policy and memo differ)', () => {
    const alone = beadStart({ taskQueue: 'q', input: { bead: { id: 'b1', title: 'T' }, rig, formula } });
    expect(alone.workflowType).toBe('beadWorkflow');
    expect(alone.options.workflowId).toBe('bead:b1');
    expect(alone.options.workflowIdReusePolicy).toBe(WorkflowIdReusePolicy.REJECT_DUPLICATE);
    expect(attrs(alone.options.typedSearchAttributes)).toEqual({
      GtKind: 'bead',
      GtRig: 'r1',
      GtBeadId: 'b1',
      GtStatus: 'open',
      // The round the bead starts in, as its first status write would say (so it skips that write).
      GtRound: 1,
      GtFormula: 'work@1',
    });
    expect(alone.options.staticSummary).toBe('bead b1: T');

    const convoy = { id: 'c1', targetBranch: 'main' };
    const inConvoy = beadStart({ taskQueue: 'q', input: { bead: { id: 'b1', title: 'T' }, rig, convoy, formula } });
    expect(attrs(inConvoy.options.typedSearchAttributes)).toMatchObject({ GtConvoyId: 'c1', GtFormula: 'work@1' });
    expect(inConvoy.options.memo).toEqual({ title: 'T', convoyId: 'c1', formula: 'work@1' });
    expect(inConvoy.options.staticSummary).toBe('bead b1 (convoy c1): T');

    const resume = {
      retries: [{ retry: 2, by: 'op', note: '', fresh: false, at: '2026-12-01T00:00:00Z', after: 'failed' as const }],
      roundsUsed: 3,
    };
    const retried = beadStart({
      taskQueue: 'q',
      input: { bead: { id: 'b1', title: 'T' }, rig, convoy, formula, resume },
      retry: 2,
    });
    expect(retried.options.workflowIdReusePolicy).toBe(WorkflowIdReusePolicy.ALLOW_DUPLICATE);
    // A retried run numbers its rounds after those its earlier runs used.
    expect(attrs(retried.options.typedSearchAttributes)).toEqual({
      ...attrs(inConvoy.options.typedSearchAttributes),
      GtRound: 4,
    });
    expect(retried.options.memo).toMatchObject({ retry: 2 });
    expect(retried.options.staticSummary).toBe('bead b1 (retry 2, convoy c1): T');
  });

  it('starts a refinery with the same attributes and summary from `gt rig add` and from a signal-with-start', () => {
    const start = refineryStart({ taskQueue: 'q', input: { rig } });
    expect(start.options.workflowId).toBe('refinery:r1');
    expect(attrs(start.options.typedSearchAttributes)).toEqual({ GtKind: 'refinery', GtRig: 'r1', GtStatus: 'idle' });
    const signalled = withSignal(start, 'enqueue', [{ mrId: 'mr:b1:1' }]);
    expect(signalled).toMatchObject({ ...start.options, signal: 'enqueue', signalArgs: [{ mrId: 'mr:b1:1' }] });
  });

  it('uses a running dispatch gate as it is, but never passes a conflict policy to signal-with-start', () => {
    const settings = { maxPolecats: 2, breakerThreshold: 3, breakerProbeInterval: 60_000 };
    const start = dispatchGateStart({ taskQueue: 'q', input: { rig: 'r1', settings } });
    expect(start.options).toMatchObject({ workflowId: 'dispatch:r1', workflowIdConflictPolicy: 'USE_EXISTING' });
    expect(withSignal(start, 's', [])).not.toHaveProperty('workflowIdConflictPolicy');
  });

  it('names merge requests and escalations by their business ids', () => {
    const input = { mrId: 'mr:b1:3', bead: { id: 'b1', title: 'T' }, rig, round: 3, convoyId: 'c1' };
    expect(mergeRequestStart(input).options).toMatchObject({
      workflowId: 'mr:b1:3',
      staticSummary: 'MR round 3 of b1: T',
    });
    expect(attrs(mergeRequestStart(input).options.typedSearchAttributes)).toEqual({
      GtKind: 'merge-request',
      GtRig: 'r1',
      GtBeadId: 'b1',
      GtConvoyId: 'c1',
    });
    const landing = convoyLandingStart({ ...input, bead: { id: 'c1', title: 'Land' }, round: 1 }, 'Convoy');
    expect(landing.options.workflowId).toBe('mr:c1:landing1');
    expect(attrs(landing.options.typedSearchAttributes)).toEqual({
      GtKind: 'merge-request',
      GtRig: 'r1',
      GtConvoyId: 'c1',
    });
    const esc = escalationStart({
      taskQueue: 'q',
      input: { id: 'e1', severity: 'high', source: 'bead', reason: 'x'.repeat(200), beadId: 'b1' },
    });
    expect(esc.options.workflowId).toBe('escalation:e1');
    expect(esc.options.staticSummary).toBe(`high escalation (bead): ${'x'.repeat(120)}`);
    expect(attrs(esc.options.typedSearchAttributes)).toEqual({
      GtKind: 'escalation',
      GtStatus: 'open',
      GtBeadId: 'b1',
    });
  });
});

describe('validation family and failure types', () => {
  it('rejects with the named InvalidInput failure, which every retry policy refuses to retry', () => {
    let failure: unknown;
    try {
      parseOrReject(z.object({ n: z.number() }), { n: 'x' }, 'thing');
    } catch (err) {
      failure = err;
    }
    expect(failure).toBeInstanceOf(ApplicationFailure);
    expect(failure).toMatchObject({ type: Failure.InvalidInput, nonRetryable: true });
    expect((failure as Error).message).toMatch(/^invalid thing: n: /);
    for (const policy of Object.values(RETRY)) expect(policy.nonRetryableErrorTypes).toContain(Failure.InvalidInput);
    expect(NON_RETRYABLE.agentStart).toContain(Failure.AgentStartRefused);
  });

  it('drops a malformed signal, saying why', () => {
    const dropped: string[] = [];
    expect(parseOrDrop(z.object({ n: z.number() }), { n: 'x' }, (p) => dropped.push(p))).toBeUndefined();
    expect(dropped).toEqual([expect.stringMatching(/^n: /)]);
  });

  it('setValidatedUpdate parses once: the validator parses and checks, the handler gets the parsed value', async () => {
    const { setValidatedUpdate } = await import('../workflows/handlers');
    let parses = 0;
    const schema = z.object({ n: z.number() }).transform((v) => (parses++, { ...v, parsed: true }));
    const checked: unknown[] = [];
    setValidatedUpdate({ type: 'update', name: 'u' } as never, {
      schema,
      what: 'u input',
      check: (input) => void checked.push(input),
      handler: (input) => input,
    });
    const raw = { n: 1 };
    captured.validator!(raw);
    expect(captured.handler!(raw)).toEqual({ n: 1, parsed: true });
    expect(parses).toBe(1);
    expect(checked).toEqual([{ n: 1, parsed: true }]);
    // On replay the validator does not run: the handler parses the recorded input itself.
    expect(captured.handler!({ n: 2 })).toEqual({ n: 2, parsed: true });
    expect(parses).toBe(2);
    expect(() => captured.validator!({ n: 'x' })).toThrow(/invalid u input: n: /);
  });
});
