/**
 * Issue 15, a step's own policy (real server, real git, scripted agents): an agent step with its own `agent` runs
 * that command instead of the rig's (the other steps keep the rig's), and a step's `timeout` is the hard cap on one
 * run of it: a run that passes it is stopped (its process gone), recorded `timed_out`, and the step fails. A step's
 * own `runtime` (sandbox, on a rig of processes) starts its runs in the sandbox and the other steps' as processes.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SandboxRuntime } from '../agents/sandbox-runtime';
import { fsSafe } from '../domain/ids';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
  const dir = join(t.gtHome, 'formulas');
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, 'own-agent.toml'),
    `name = "own-agent"
version = 1
[[steps]]
id = "plan"
title = "plan"
kind = "agent"
agent = "FORMULA_AGENT=planner sh '${agentScript('formula-step')}'"
prompt = "Plan {{bead.title}}"
[[steps]]
id = "implement"
title = "implement"
kind = "agent"
needs = ["plan"]
prompt = "Implement: {{steps.plan.output}}"
`,
  );
  writeFileSync(
    join(dir, 'capped.toml'),
    `name = "capped"
version = 1
[[steps]]
id = "slow"
title = "slow"
kind = "agent"
agent = "sh '${agentScript('run-hang')}'"
timeout = "3s"
attempts = 1
prompt = "Take your time on {{bead.title}}"
[[steps]]
id = "implement"
title = "implement"
kind = "agent"
needs = ["slow"]
prompt = "Implement {{bead.title}}"
`,
  );
  // A step that runs in the sandbox on a rig that runs processes: the agent reports whether it can see a directory of
  // the host outside its run (FORMULA_MARKS, under /tmp, which the sandbox replaces with its own).
  writeFileSync(
    join(dir, 'boxed.toml'),
    `name = "boxed"
version = 1
[[steps]]
id = "plan"
title = "plan"
kind = "agent"
runtime = "sandbox"
agent = "sh -c 'if [ -e \\"$FORMULA_MARKS\\" ]; then m=visible; else m=hidden; fi; gt done --summary \\"planned in a box: marks $m\\"'"
prompt = "Plan {{bead.title}}"
[[steps]]
id = "implement"
title = "implement"
kind = "agent"
needs = ["plan"]
prompt = "Implement: {{steps.plan.output}}"
`,
  );
});
afterAll(async () => {
  await t?.stop();
});

describe("a step's own agent, runtime and timeout", () => {
  it("runs the step's own agent command, and the rig's for the other steps", async () => {
    const repo = await createRepo();
    const marks = mkdtempSync(join(tmpdir(), 'gt-formula-marks-'));
    await t.addRig({
      name: 'own',
      repo: repo.origin,
      agent: agentScript('formula-step'),
      env: { FORMULA_MARKS: marks },
    });
    const { beadId } = await t.town.sling('own', { id: 'own-1', title: 'Add it', formula: 'own-agent' });
    expect((await t.town.beadResult(beadId)).status).toBe('closed');
    const state = await t.town.beadState(beadId);
    expect(state.steps!.map((s) => [s.id, s.state, s.output])).toEqual([
      ['plan', 'done', 'output of plan by own-1/r1/a1 (agent planner)'],
      ['implement', 'done', 'output of implement by own-1/r1/a2'],
    ]);
    expect(readFileSync(join(marks, 'implement-1.md'), 'utf8')).toContain(
      'output of plan by own-1/r1/a1 (agent planner)',
    );
  }, 240_000);

  it("stops a run that passes the step's timeout, and the step fails", async () => {
    const repo = await createRepo();
    const dir = mkdtempSync(join(tmpdir(), 'gt-formula-capped-'));
    await t.addRig({ name: 'capd', repo: repo.origin, agent: agentScript('good'), env: { TEST_DIR: dir } });
    const { beadId } = await t.town.sling('capd', { id: 'capd-1', title: 'Slow work', formula: 'capped' });
    const result = await t.town.beadResult(beadId);
    expect(result.status).toBe('failed');
    expect(result.reason).toContain("the run passed step slow's timeout of 3000 ms and was stopped");
    const state = await t.town.beadState(beadId);
    expect(state.runs.map((r) => [r.runId, r.outcome])).toEqual([['capd-1/r1/a1', 'timed_out']]);
    expect(state.steps!.map((s) => [s.id, s.state])).toEqual([
      ['slow', 'failed'],
      ['implement', 'pending'],
    ]);
    const run = state.runs[0]!;
    // Stopped at the cap (3 s), long before the stall timeout (60 s) or the agent's own end (600 s).
    expect(Date.parse(run.endedAt!) - Date.parse(run.startedAt)).toBeLessThan(30_000);
    const [, pid] = readFileSync(join(dir, 'hang-starts'), 'utf8').trim().split(' ');
    await eventually(
      () => {
        try {
          process.kill(Number(pid), 0);
          return Promise.resolve(false);
        } catch {
          return Promise.resolve(true);
        }
      },
      20_000,
      'the hung agent stopped',
    );
    expect(existsSync(join(dir, 'hang-starts'))).toBe(true);
  }, 240_000);
});

const sandbox = await new SandboxRuntime().available();
if (!sandbox.ok) console.warn(`the sandbox step test is skipped: ${sandbox.reason}`);

describe.runIf(sandbox.ok)("a step's own runtime", () => {
  it('runs a step in the sandbox on a rig of processes, and the other steps as processes', async () => {
    const repo = await createRepo();
    const marks = mkdtempSync(join(tmpdir(), 'gt-formula-marks-'));
    await t.addRig({
      name: 'boxd',
      repo: repo.origin,
      agent: agentScript('formula-step'),
      env: { FORMULA_MARKS: marks },
    });
    const { beadId } = await t.town.sling('boxd', { id: 'boxd-1', title: 'Plan in a box', formula: 'boxed' });
    expect((await t.town.beadResult(beadId)).status).toBe('closed');
    const state = await t.town.beadState(beadId);
    // The sandboxed step reached the gateway (through its socket) and could not see the host's directory.
    expect(state.steps!.map((s) => [s.id, s.state, s.output])).toEqual([
      ['plan', 'done', 'planned in a box: marks hidden'],
      ['implement', 'done', 'output of implement by boxd-1/r1/a2'],
    ]);
    // Each run was started (and recorded) by the runtime its step asked for.
    const runtimeOf = (run: string) =>
      (JSON.parse(readFileSync(join(t.gtHome, 'runs', fsSafe(run), 'handle.json'), 'utf8')) as { runtime: string })
        .runtime;
    expect([runtimeOf('boxd-1/r1/a1'), runtimeOf('boxd-1/r1/a2')]).toEqual(['sandbox', 'process']);
    expect(readFileSync(join(marks, 'implement-1.md'), 'utf8')).toContain('planned in a box: marks hidden');
    expect(readdirSync(marks).filter((f) => f.endsWith('.md'))).toEqual(['implement-1.md']);
    expect((await repo.log('main')).filter((c) => c.body.includes(`Gt-Merge-Request: mr:${beadId}:`))).toHaveLength(1);
  }, 240_000);
});
