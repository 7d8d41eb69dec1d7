/**
 * The user's contract (design brief): every command exists and teaches with --help, every read command's --json
 * output is what a script may rely on (schema-checked), and failures are one line on stderr with a non-zero exit.
 * Real CLI processes against a real town.
 */
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { BeadStatus } from '../domain/bead';
import { ConvoyState } from '../domain/convoy';
import { RigConfig } from '../domain/rig';
import { createRepo } from './helpers/repo';
import { runGt, startTestTown, type TestTown } from './helpers/town';

/** Every command of the contract, with whether it is a read command (then it must take --json). */
const CONTRACT: { command: string[]; read?: true }[] = [
  { command: ['up'] },
  { command: ['worker'] },
  { command: ['rig', 'add'] },
  { command: ['rig', 'list'], read: true },
  { command: ['rig', 'show'], read: true },
  { command: ['rig', 'update'] },
  { command: ['sling'] },
  { command: ['convoy', 'start'] },
  { command: ['convoy', 'status'], read: true },
  { command: ['convoy', 'list'], read: true },
  { command: ['convoy', 'cancel'] },
  { command: ['bead', 'status'], read: true },
  { command: ['bead', 'list'], read: true },
  { command: ['bead', 'cancel'] },
  { command: ['rig', 'remove'] },
  { command: ['status'], read: true },
  { command: ['mq'], read: true },
  { command: ['escalations'], read: true },
  { command: ['escalation', 'ack'] },
  { command: ['done'] },
  { command: ['approve'] },
  { command: ['request-changes'] },
  { command: ['escalate'] },
  { command: ['mcp'] },
];

const Json = <S extends z.ZodType>(schema: S, stdout: string) => schema.parse(JSON.parse(stdout));

const BeadStateJson = z.looseObject({
  beadId: z.string(),
  title: z.string(),
  rig: z.string(),
  status: BeadStatus,
  round: z.number().int(),
  waitingFor: z.string(),
  targetBranch: z.string(),
  mergedCommit: z
    .string()
    .regex(/^[0-9a-f]{40}$/)
    .optional(),
  runs: z.array(
    z.looseObject({
      runId: z.string(),
      round: z.number(),
      attempt: z.number(),
      outcome: z.string(),
      startedAt: z.string(),
    }),
  ),
  rounds: z.array(
    z.looseObject({ round: z.number(), headSha: z.string().optional(), mergeRequest: z.string().optional() }),
  ),
  feedback: z.array(z.string()),
});
const Ticket = z.looseObject({
  mrId: z.string(),
  beadId: z.string(),
  headSha: z.string(),
  targetBranch: z.string(),
  priority: z.number(),
});
const MergeQueueJson = z.looseObject({
  rig: z.string(),
  paused: z.boolean(),
  queue: z.array(Ticket),
  merged: z.number().int(),
  rejected: z.number().int(),
});
const EscalationJson = z.looseObject({
  id: z.string(),
  severity: z.enum(['low', 'medium', 'high', 'critical']),
  reason: z.string(),
  source: z.string(),
  status: z.enum(['open', 'acknowledged']),
  raisedAt: z.string(),
});
const ConvoySummaryJson = z.looseObject({
  convoyId: z.string(),
  title: z.string(),
  rig: z.string(),
  status: z.string(),
  startedAt: z.string(),
});
const ConvoyStatusJson = z.looseObject({
  convoy: ConvoyState,
  counts: z.record(z.string(), z.number()),
  beads: z.array(z.looseObject({ id: z.string(), status: z.string() })),
});

let t: TestTown;
let env: NodeJS.ProcessEnv;
beforeAll(async () => {
  t = await startTestTown();
  env = t.cliEnv();
});
afterAll(async () => {
  await t?.stop();
});

describe('every contract command', () => {
  // Concurrent: each is a process start and nothing else, and none changes the town.
  it.concurrent.for(CONTRACT.map((c) => [c.command.join(' '), c] as const))(
    'gt %s exists, explains itself with --help, and takes --json if it reads',
    async ([, c], { expect }) => {
      const r = await runGt([...c.command, '--help'], env);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^Usage: gt ${c.command.join(' ')}\\b`));
      const description = r.stdout.split('\n').slice(1).join('\n').trim();
      expect(description.length, 'a description under the usage line').toBeGreaterThan(20);
      if (c.read) expect(r.stdout).toMatch(/--json\b/);
    },
  );
});

describe('read commands', () => {
  it('print JSON a script can rely on: rigs, beads, merge queues, convoys, escalations', async () => {
    const repo = await createRepo();
    const add = await runGt(
      [
        'rig',
        'add',
        'contract',
        '--repo',
        repo.origin,
        '--agent',
        join(import.meta.dirname, 'agents', 'good.sh'),
        '--json',
      ],
      env,
    );
    expect(add.code, add.stderr).toBe(0);
    expect(Json(RigConfig, add.stdout).name).toBe('contract');

    expect(Json(z.array(RigConfig), (await runGt(['rig', 'list', '--json'], env)).stdout).map((r) => r.name)).toContain(
      'contract',
    );
    const shown = Json(RigConfig, (await runGt(['rig', 'show', 'contract', '--json'], env)).stdout);
    expect(shown).toMatchObject({ name: 'contract', branch: 'main' });

    // Only what is given changes; the refinery's next merge runs the new gate.
    const marks = mkdtempSync(join(tmpdir(), 'gt-contract-gate-'));
    const updated = await runGt(
      [
        'rig',
        'update',
        'contract',
        '--gate',
        `touch ${marks}/gate-ran`,
        '--max-polecats',
        '2',
        '--env',
        'A=1',
        '--max-rounds',
        '2',
        '--json',
      ],
      env,
    );
    expect(updated.code, updated.stderr).toBe(0);
    const after = Json(RigConfig, updated.stdout);
    expect(after).toEqual({
      ...shown,
      gates: [`touch ${marks}/gate-ran`],
      maxPolecats: 2,
      env: { ...shown.env, A: '1' },
      policy: { ...shown.policy, maxRounds: 2 },
    });
    // A bad value is one line naming the setting, and changes nothing.
    const bad = await runGt(['rig', 'update', 'contract', '--strategy', 'sideways'], env);
    expect(bad.code).toBe(1);
    expect(bad.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/mergeStrategy/);
    expect(Json(RigConfig, (await runGt(['rig', 'show', 'contract', '--json'], env)).stdout)).toEqual(after);
    expect((await runGt(['rig', 'update', 'contract'], env)).stderr).toMatch(/nothing to change/);

    const sling = await runGt(
      ['sling', 'contract', 'Contract bead', '--id', 'b-contract', '--wait', '--json'],
      env,
      90_000,
    );
    expect(sling.code, sling.stderr).toBe(0);
    expect(Json(BeadStateJson, sling.stdout)).toMatchObject({ beadId: 'b-contract', status: 'closed' });
    const bead = Json(BeadStateJson, (await runGt(['bead', 'status', 'b-contract', '--json'], env)).stdout);
    expect(bead.mergedCommit).toBe(await repo.sha());
    expect(existsSync(join(marks, 'gate-ran'))).toBe(true);

    const mq = Json(MergeQueueJson, (await runGt(['mq', 'contract', '--json'], env)).stdout);
    expect(mq).toMatchObject({ rig: 'contract', merged: 1, queue: [] });

    const spec = join(mkdtempSync(join(tmpdir(), 'gt-contract-')), 'convoy.yaml');
    writeFileSync(
      spec,
      [
        'title: Contract convoy',
        'rig: contract',
        'beads:',
        '  - id: one',
        '    title: First',
        '  - id: two',
        '    title: Second',
        '    dependsOn: [one]',
        '',
      ].join('\n'),
    );
    const started = await runGt(['convoy', 'start', spec, '--id', 'ccontract', '--wait', '--json'], env, 120_000);
    expect(started.code, started.stderr).toBe(0);
    const status = Json(ConvoyStatusJson, (await runGt(['convoy', 'status', 'ccontract', '--json'], env)).stdout);
    expect(status.convoy.status).toBe('landed');
    expect(status.beads.map((b) => b.status)).toEqual(['closed', 'closed']);
    expect(Json(z.array(ConvoySummaryJson), (await runGt(['convoy', 'list', '--json'], env)).stdout)).toContainEqual(
      expect.objectContaining({ convoyId: 'ccontract', status: 'landed' }),
    );

    const escalations = await runGt(['escalations', '--all', '--json'], env);
    expect(escalations.code, escalations.stderr).toBe(0);
    Json(z.array(EscalationJson), escalations.stdout);
  });

  const unknowns: [string[]][] = [
    [['rig', 'show', 'no-such-rig']],
    [['rig', 'update', 'no-such-rig', '--max-polecats', '2']],
    [['bead', 'status', 'no-such-bead']],
    [['mq', 'no-such-rig']],
    [['convoy', 'status', 'no-such-convoy']],
    [['escalation', 'ack', 'no-such-escalation']],
    [['sling', 'no-such-rig', 'A title']],
  ];
  it.concurrent.for(unknowns)(
    'gt %j fails with one line saying what is wrong, and exit code 1',
    async ([args], { expect }) => {
      const r = await runGt([...args, '--json'], env);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      const lines = r.stderr.trimEnd().split('\n');
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(/^gt: .*no-such-/);
    },
  );
});
