/**
 * Issue 15, layer A wiring on a real server: `gt sling --formula/--var`, a rig's default formula, and formulas in
 * convoy specs. A bad formula or variable is refused in one line before anything starts (no bead, no convoy, rig
 * unchanged); a good one is resolved where the work is handed out, travels in the bead's input, and is visible as
 * the GtFormula search attribute and in the memo.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConvoyClient } from '../client/convoys';
import { SA } from '../domain/search-attributes';
import type { BeadWorkflowInput } from '../domain/bead';
import { beadExists, workflowExists, writeSpec } from './helpers/convoy';
import { createRepo } from './helpers/repo';
import { eventually, runGt, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
  // A town formula with a required variable, and a broken one (a cycle), in the town's GT_HOME.
  const dir = join(t.gtHome, 'formulas');
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, 'ticket.toml'),
    `name = "ticket"\nversion = 4\n[vars.ticket]\nrequired = true\ndescription = "the ticket number"\n[[steps]]\nid = "work"\ntitle = "work"\nkind = "agent"\n`,
  );
  // Valid, but not runnable: its legs have no synthesis after them (formulaRunProblem).
  writeFileSync(
    join(dir, 'scatter.toml'),
    `name = "scatter"\nversion = 1\n[[steps]]\nid = "l"\ntitle = "l"\nkind = "legs"\nlegs = 2\nprompt = "try {{leg}}"\n[[steps]]\nid = "b"\ntitle = "b"\nkind = "agent"\nneeds = ["l"]\nprompt = "go"\n`,
  );
  writeFileSync(
    join(dir, 'loopy.toml'),
    `name = "loopy"\nversion = 1\n[[steps]]\nid = "a"\ntitle = "a"\nkind = "gate"\nneeds = ["b"]\n[[steps]]\nid = "b"\ntitle = "b"\nkind = "gate"\nneeds = ["a"]\n`,
  );
});
afterAll(async () => {
  await t?.stop();
});

const startInput = async (beadId: string): Promise<BeadWorkflowInput> => {
  const history = await t.client.workflow.getHandle(`bead:${beadId}`).fetchHistory();
  const attrs = history.events![0]!.workflowExecutionStartedEventAttributes!;
  const payload = attrs.input!.payloads![0]!;
  return JSON.parse(Buffer.from(payload.data!).toString()) as BeadWorkflowInput;
};

describe('gt sling --formula', () => {
  it('refuses a bad formula or variable in one line and starts nothing', async () => {
    const repo = await createRepo();
    await t.addRig({ name: 'fw', repo: repo.origin });
    const env = t.cliEnv();
    const cases: [string, string[], string][] = [
      [
        'bad-name',
        ['--formula', 'nope'],
        "gt: unknown formula 'nope' (known: careful, explore, loopy, review-only, scatter, ticket, work; see `gt formula list`)",
      ],
      [
        'bad-var',
        ['--formula', 'careful', '--var', 'colour=red'],
        "gt: formula careful has no variable 'colour' (it has: focus)",
      ],
      ['missing-var', ['--formula', 'ticket'], 'gt: formula ticket needs --var ticket=<value> (the ticket number)'],
      ['cycle', ['--formula', 'loopy'], 'dependency cycle a → b → a (each depends on the next)'],
      ['bad-flag', ['--formula', 'careful', '--var', 'focus'], "gt: --var takes name=value, got 'focus'"],
      [
        'cannot-run',
        ['--formula', 'scatter'],
        "gt: formula scatter cannot run: legs step 'l' has no synthesis step after it",
      ],
    ];
    for (const [id, flags, message] of cases) {
      const r = await runGt(['sling', 'fw', 'T', '--id', `fw-${id}`, ...flags], env);
      expect(r.code, id).toBe(1);
      expect(r.stderr.trim().split('\n'), id).toHaveLength(1);
      expect(r.stderr, id).toContain(message);
      expect(await beadExists(t.client, `fw-${id}`), id).toBe(false);
    }
  }, 180_000);

  it('records the formula in the bead input, the GtFormula search attribute and the memo', async () => {
    const repo = await createRepo();
    await t.addRig({ name: 'fw2', repo: repo.origin });
    const r = await runGt(
      ['sling', 'fw2', 'Ticket work', '--id', 'fw2-ok', '--formula', 'ticket', '--var', 'ticket=GT-7', '--json'],
      t.cliEnv(),
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const input = await startInput('fw2-ok');
    expect(input.formula).toMatchObject({ name: 'ticket', version: 4, vars: { ticket: 'GT-7' } });
    expect(input.formula!.source).toBe(join(t.gtHome, 'formulas', 'ticket.toml'));
    const d = await t.client.workflow.getHandle('bead:fw2-ok').describe();
    expect(d.typedSearchAttributes.get(SA.formula)).toBe('ticket@4');
    expect(d.memo?.formula).toBe('ticket@4');
    // A single agent step with no prompt of its own runs today's path: the bead merges as any bead does.
    const result = await t.town.beadResult('fw2-ok');
    expect(result.status).toBe('closed');
    // Visible to a saved query.
    await eventually(
      async () => {
        for await (const wf of t.client.workflow.list({ query: t.town.scoped(`GtFormula = 'ticket@4'`) }))
          if (wf.workflowId === 'bead:fw2-ok') return true;
        return false;
      },
      30_000,
      'GtFormula in visibility',
    );
  }, 120_000);
});

describe("a rig's default formula", () => {
  it('is checked when the rig is added or updated, and used by beads that name none', async () => {
    const repo = await createRepo();
    const refused = await runGt(['rig', 'add', 'fw3', '--repo', repo.origin, '--formula', 'ticket'], t.cliEnv());
    expect(refused.code).toBe(1);
    expect(refused.stderr).toBe('gt: formula ticket needs --var ticket=<value> (the ticket number)\n');
    expect(await workflowExists(t.client, 'refinery:fw3')).toBe(false);

    await t.addRig({ name: 'fw3', repo: repo.origin, formula: 'ticket', formulaVars: { ticket: 'GT-1' } });
    const update = await runGt(['rig', 'update', 'fw3', '--formula', 'scatter'], t.cliEnv());
    expect(update.code).toBe(1);
    expect(update.stderr).toContain("gt: formula scatter cannot run: legs step 'l' has no synthesis step after it");
    expect((await t.town.getRig('fw3')).formula).toBe('ticket');

    const { beadId } = await t.town.sling('fw3', { title: 'default formula' });
    expect((await startInput(beadId)).formula).toMatchObject({ name: 'ticket', vars: { ticket: 'GT-1' } });
    // Naming another formula drops the rig's variables (they belong to the rig's formula; work declares none).
    const named = await t.town.sling('fw3', { title: 'named', formula: 'work' });
    expect((await startInput(named.beadId)).formula).toMatchObject({ name: 'work', vars: {} });
    await t.town.beadResult(named.beadId);
    await t.town.beadResult(beadId);
  }, 120_000);
});

describe('formulas in convoy specs', () => {
  it('refuses a bead whose formula does not resolve, starting nothing', async () => {
    const repo = await createRepo();
    await t.addRig({ name: 'fw4', repo: repo.origin });
    const spec = writeSpec({
      id: 'fwc-bad',
      title: 'T',
      rig: 'fw4',
      formula: 'ticket',
      vars: { ticket: 'GT-9' },
      beads: [
        { id: 'a', title: 'A' },
        { id: 'b', title: 'B', formula: 'careful', vars: { nope: '1' } },
      ],
    });
    const r = await runGt(['convoy', 'start', spec], t.cliEnv());
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      "gt: invalid convoy spec: bead 'b': formula careful has no variable 'nope' (it has: focus)\n",
    );
    expect(await workflowExists(t.client, 'convoy:fwc-bad')).toBe(false);
  }, 60_000);

  it("starts each bead with its formula: the convoy's by default, with the convoy's variables", async () => {
    const repo = await createRepo();
    await t.addRig({ name: 'fw5', repo: repo.origin });
    const convoys = new ConvoyClient(t.town);
    await convoys.start({
      id: 'fwc-ok',
      title: 'T',
      rig: 'fw5',
      formula: 'ticket',
      vars: { ticket: 'GT-9' },
      beads: [
        { id: 'a', title: 'A' },
        { id: 'b', title: 'B', formula: 'work', dependsOn: ['a'] },
      ],
    });
    const state = await eventually(
      async () => {
        const s = await convoys.state('fwc-ok');
        return ['landed', 'failed'].includes(s.status) && s;
      },
      90_000,
      'convoy landed',
    );
    expect(state.status).toBe('landed');
    expect((await startInput('fwc-ok-a')).formula).toMatchObject({ name: 'ticket', vars: { ticket: 'GT-9' } });
    expect((await startInput('fwc-ok-b')).formula).toMatchObject({ name: 'work', vars: {} });
    const d = await t.client.workflow.getHandle('bead:fwc-ok-b').describe();
    expect(d.typedSearchAttributes.get(SA.formula)).toBe('work@1');
  }, 120_000);
});
