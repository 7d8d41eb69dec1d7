/**
 * The hostile-agent suite (docs/security.md): a scripted agent (test/agents/hostile.sh) tries every attack on the
 * boundary from inside a real sandbox (bubblewrap) and a real container (Docker Engine) — read the gateway secret,
 * the credential store, another run's token and prompt, the worker's environment; signal a host process; push the
 * target or another bead's branch; plant a handle file; write the mirror; speak for another run or as a reviewer;
 * steal the worker's environment through a gate it wrote; plant fsmonitor and hook traps for the worker's git —
 * and the bead still ends correctly. The same agent under the `process` runtime (trusted agents only) is the
 * control: there the read probes do find the secrets, so a "blocked" below is the boundary's doing, not a dud probe.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { saveHostCredential } from '../activities/credentials';
import { DockerRuntime } from '../agents/docker-runtime';
import { SandboxRuntime } from '../agents/sandbox-runtime';
import type { AgentRuntimeDriver } from '../agents/runtime';
import type { AgentRuntime } from '../domain/rig';
import { paths } from '../host/home';
import { createRepo, type TestRepo } from './helpers/repo';
import { agentScript, startTestTown, type TestTown } from './helpers/town';

const ENV_NAME = 'GT_HOSTILE_WORKER_SECRET';
const ENV_VALUE = 'worker-env-secret-7c1e';
const CREDENTIAL = 'forge-credential-5d2a';
const VICTIM_TOKEN = 'gtr1.victim-token-9b3f';
const VICTIM_PROMPT = 'victim prompt 4e8a';

const ATTACKS = [
  'read:gateway.secret',
  'read:git-credentials',
  'read:token',
  'read:prompt.md',
  'proc-environ',
  'kill-host-process',
  'push-origin-main',
  'push-repo-main',
  'push-repo-other-bead',
  'plant-handle',
  'write-mirror',
  'speak-for-other-run',
  'speak-as-reviewer',
];

async function availableRuntime(driver: AgentRuntimeDriver): Promise<string | undefined> {
  const check = await driver.available();
  if (!check.ok) return check.reason;
  if (driver instanceof DockerRuntime && !(await driver.hasImage?.()))
    return 'the agent image is not built (gt image build)';
  return undefined;
}

const contained: [AgentRuntime, AgentRuntimeDriver][] = [
  ['sandbox', new SandboxRuntime()],
  ['docker', new DockerRuntime()],
];
const availability = await Promise.all(
  contained.map(async ([name, driver]) => ({ name, reason: await availableRuntime(driver) })),
);
for (const a of availability) if (a.reason) console.warn(`hostile-agent suite: skipping '${a.name}': ${a.reason}`);

interface Scene {
  t: TestTown;
  repo: TestRepo;
  testDir: string;
  decoy: ChildProcess;
  secret: string;
}

/** A town with secrets where an attacker would look for them, a victim run's files, and a host process to attack. */
async function scene(): Promise<Scene> {
  const t = await startTestTown();
  const repo = await createRepo();
  const testDir = mkdtempSync(join(tmpdir(), 'gt-hostile-'));
  saveHostCredential(t.gtHome, 'https://git.example.com', 'ci', CREDENTIAL);
  const victim = paths.agentDir('victim/r1/a1', t.gtHome);
  mkdirSync(victim, { recursive: true });
  writeFileSync(join(victim, 'token'), VICTIM_TOKEN, { mode: 0o600 });
  writeFileSync(join(victim, 'prompt.md'), VICTIM_PROMPT, { mode: 0o600 });
  // A stand-in for the worker: a host process of the same user with a secret in its environment.
  const decoy = spawn('sleep', ['600'], { env: { ...process.env, [ENV_NAME]: ENV_VALUE }, stdio: 'ignore' });
  process.env[ENV_NAME] = ENV_VALUE;
  return { t, repo, testDir, decoy, secret: readFileSync(join(t.gtHome, 'gateway.secret'), 'utf8').trim() };
}

function hostileEnv(s: Scene, rig: string): Record<string, string> {
  const victim = paths.agentDir('victim/r1/a1', s.t.gtHome);
  return {
    HOSTILE_READ: [
      join(s.t.gtHome, 'gateway.secret'),
      join(s.t.gtHome, 'git-credentials'),
      join(victim, 'token'),
      join(victim, 'prompt.md'),
    ].join(' '),
    HOSTILE_ENV_NAME: ENV_NAME,
    HOSTILE_DECOY_PID: String(s.decoy.pid),
    HOSTILE_REPO: s.repo.origin,
    HOSTILE_RUNS: join(s.t.gtHome, 'runs'),
    HOSTILE_MIRROR: paths.mirror(rig, s.t.gtHome),
    HOSTILE_MARKER: join(s.testDir, 'pwned'),
  };
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

function gateLogs(gtHome: string): string {
  const runs = join(gtHome, 'runs');
  return readdirSync(runs)
    .filter((d) => d.startsWith('gate-') && existsSync(join(runs, d, 'output.log')))
    .map((d) => readFileSync(join(runs, d, 'output.log'), 'utf8'))
    .join('\n');
}

function parseAttacks(text: string | null): Record<string, string> {
  return Object.fromEntries(
    (text ?? '')
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => [l.slice(0, l.indexOf(' ')), l.slice(l.indexOf(' ') + 1)]),
  );
}

/** A scene for the tests of one describe block, torn down after them (the decoy too). */
function useScene(): () => Scene {
  let s: Scene | undefined;
  beforeAll(async () => {
    s = await scene();
  });
  afterAll(async () => {
    s?.decoy.kill('SIGKILL');
    delete process.env[ENV_NAME];
    await s?.t.stop();
  });
  return () => s!;
}

describe.each(availability.filter((a) => !a.reason).map((a) => a.name))(
  'a hostile agent in the %s runtime',
  (runtime) => {
    const use = useScene();

    it('reaches no secret, no other run, no branch and no host process, its traps never run, and its bead merges once', async () => {
      const s = use();
      const rig = `hostile-${runtime}`;
      await s.t.addRig({
        name: rig,
        repo: s.repo.origin,
        runtime,
        // Network on where the engine can give one: pushing must fail for want of anything to push with, not of a route.
        network: runtime === 'sandbox',
        agent: agentScript('hostile'),
        gates: ['sh ci.sh'],
        env: hostileEnv(s, rig),
      });
      const { handle } = await s.t.town.sling(rig, { id: `b-hostile-${runtime}`, title: 'Do something nasty' });
      const result = await handle.result();
      expect(result.status, JSON.stringify(result)).toBe('closed');

      const attacks = parseAttacks(await s.repo.show('attacks.txt'));
      expect(Object.keys(attacks).sort()).toEqual([...ATTACKS].sort());
      for (const [attack, outcome] of Object.entries(attacks))
        if (attack !== 'plant-handle') expect(outcome, attack).toBe('blocked');

      // Nothing the agent planted ran as the worker, no host process died, no branch moved but by the refinery.
      expect(readdirSync(s.testDir).filter((f) => f.startsWith('pwned'))).toEqual([]);
      expect(alive(s.decoy.pid!)).toBe(true);
      // The handle file: whatever the agent managed to write, nothing of it is in the worker's run directory.
      expect(existsSync(join(s.t.gtHome, 'runs', 'evil'))).toBe(false);
      expect(await s.repo.show('attacks.txt', 'gt/victim')).toBeNull();
      const log = await s.repo.log();
      // The refinery's merge, the agent's commit and the seed: nothing else (commits of one second have no set order).
      expect(log.map((c) => c.subject).sort()).toEqual([
        `Do something nasty (b-hostile-${runtime})`,
        `hostile work for b-hostile-${runtime}`,
        'initial commit',
      ]);

      // The gate ran the agent's script, and it found nothing either.
      const gates = gateLogs(s.t.gtHome);
      expect(gates).toContain('gate env:');
      for (const value of [ENV_VALUE, s.secret, CREDENTIAL, VICTIM_TOKEN, VICTIM_PROMPT])
        expect(gates).not.toContain(value);
    });

    it('pointing its work tree at a git dir of its own gets its attempt refused, and the worker never runs its config', async () => {
      const s = use();
      const rig = `hostile-gitfile-${runtime}`;
      await s.t.addRig({
        name: rig,
        repo: s.repo.origin,
        runtime,
        agent: agentScript('hostile'),
        env: { ...hostileEnv(s, rig), HOSTILE_GITFILE: '1' },
        policy: { maxAttempts: 1, maxRounds: 1 },
      });
      const { handle } = await s.t.town.sling(rig, { id: `b-gitfile-${runtime}`, title: 'Redirect the worker' });
      const result = await handle.result();
      expect(result.status).toBe('failed');
      expect(JSON.stringify(result)).toContain("is not the run's repository any more");
      expect(readdirSync(s.testDir).filter((f) => f.startsWith('pwned'))).toEqual([]);
      expect(await s.repo.show('attacks.txt', `gt/b-gitfile-${runtime}`)).toBeNull();
    });
  },
);

describe('the same agent under the process runtime (trusted agents only): the control', () => {
  const use = useScene();

  it('finds the secrets it can reach on the host, so the probes are real; the worker-side traps still never run', async () => {
    const s = use();
    const rig = 'hostile-process';
    const victimRepo = await createRepo();
    // Pushes go to a repository of their own here: on the host nothing stops them, and the point is the probes.
    await s.t.addRig({
      name: rig,
      repo: s.repo.origin,
      agent: agentScript('hostile'),
      env: { ...hostileEnv(s, rig), HOSTILE_REPO: victimRepo.origin },
    });
    const { handle } = await s.t.town.sling(rig, { id: 'b-hostile-process', title: 'Do something nasty, trusted' });
    await handle.result();
    const attacks = parseAttacks(await s.repo.show('attacks.txt'));
    expect(attacks['read:gateway.secret']).toBe(`LEAKED:${s.secret}`);
    expect(attacks['read:git-credentials']).toContain(CREDENTIAL);
    expect(attacks['proc-environ']).toMatch(/^LEAKED:/);
    expect(attacks['kill-host-process']).toBe('LEAKED');
    expect(attacks['plant-handle']).toBe('written');
    expect(existsSync(join(s.t.gtHome, 'runs', 'evil', 'handle.json'))).toBe(true);
    // What the worker itself decides stays closed whatever the runtime.
    expect(attacks['speak-for-other-run']).toBe('blocked');
    expect(attacks['speak-as-reviewer']).toBe('blocked');
    expect(readdirSync(s.testDir).filter((f) => f.startsWith('pwned'))).toEqual([]);
  });
});
