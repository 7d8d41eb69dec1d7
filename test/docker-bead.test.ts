/**
 * Issue 11 acceptance, on a real Docker Engine: a bead is worked by an agent in a real container and merged; and
 * kill -9 of the worker while that container runs → a new worker adopts the live container, exactly one container
 * ever existed for the run (counted from the engine), one merge. The workers are real `gt worker` processes.
 * Skipped, with the reason, where no engine or no agent image is here (`npm test` provisions both as root).
 */
import Docker from 'dockerode';
import { describe, expect, it } from 'vitest';
import { DockerRuntime, LABELS } from '../agents/docker-runtime';
import { DEFAULT_AGENT_IMAGE } from '../domain/rig';
import { paths } from '../host/home';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, FAST_POLICY, supervisionReattached, workerProcesses } from './helpers/town';

const runtime = new DockerRuntime();
const engine = await runtime.available();
const docker = new Docker();
const image = engine.ok
  ? await docker
      .getImage(DEFAULT_AGENT_IMAGE)
      .inspect()
      .then(
        () => true,
        () => false,
      )
  : false;
const skip = !engine.ok ? engine.reason : !image ? `no image ${DEFAULT_AGENT_IMAGE} (gt image build)` : undefined;
if (skip) console.warn(`docker bead tests skipped: ${skip}`);

/** Every container the engine ever made for a run of this town (running or not): earlier test runs reuse the ids. */
const containersOf = async (runId: string, gtHome: string) =>
  docker.listContainers({
    all: true,
    filters: { label: [`${LABELS.run}=${runId}`, `${LABELS.runDir}=${paths.runDir(runId, gtHome)}`] },
  });

const workers = workerProcesses();

describe.skipIf(!!skip)('beads in real containers', () => {
  const townOn = async () => {
    const host = await workers.host('docker');
    return {
      town: host.town,
      startWorker: host.start,
      gtHome: host.gtHome,
    };
  };

  it('merges a bead worked by an agent in a container that runs as the worker’s user, with no network', async () => {
    const { town, startWorker, gtHome } = await townOn();
    await startWorker();
    const repo = await createRepo();
    await town.addRig({
      name: 'docker-rig',
      repo: repo.origin,
      runtime: 'docker',
      agent: agentScript('good'),
      gates: ['test -f work/b-docker.txt'],
      policy: FAST_POLICY,
    });
    const { handle } = await town.sling('docker-rig', { id: 'b-docker', title: 'Work in a container' });
    const result = await handle.result();
    expect(result.status, JSON.stringify(result)).toBe('closed');
    expect(await repo.show('work/b-docker.txt')).toBe('done by b-docker/r1/a1\n');
    const [container] = await containersOf('b-docker/r1/a1', gtHome);
    expect(container).toBeDefined();
    const info = await docker.getContainer(container!.Id).inspect();
    expect(info.Config.User).toBe(`${process.getuid!()}:${process.getgid!()}`);
    expect(info.HostConfig.NetworkMode).toBe('none');
    expect(info.HostConfig.CapDrop).toEqual(['ALL']);
    expect(info.State.ExitCode).toBe(0);
  });

  it('survives kill -9 of its worker: the next worker adopts the live container; one container, one merge', async () => {
    const { town, startWorker, gtHome } = await townOn();
    const repo = await createRepo();
    await town.addRig({
      name: 'docker-kill',
      repo: repo.origin,
      runtime: 'docker',
      agent: agentScript('wait-for-nudge'),
      policy: { ...FAST_POLICY, heartbeatTimeout: 3_000 },
    });
    const first = await startWorker();
    const { handle } = await town.sling('docker-kill', {
      id: 'b-dkill',
      title: 'Survive a worker crash in a container',
    });
    await eventually(
      async () => (await town.beadState('b-dkill')).runs[0]?.lastProgress?.startsWith('started in'),
      90_000,
      'agent started in its container',
    );
    const [container] = await containersOf('b-dkill/r1/a1', gtHome);
    expect(container?.State).toBe('running');

    first.proc.kill('SIGKILL');
    await new Promise((resolve) => first.proc.once('exit', resolve));
    expect((await docker.getContainer(container!.Id).inspect()).State.Running).toBe(true);

    await startWorker();
    await eventually(() => supervisionReattached(handle), 60_000, 'supervision re-attached on the new worker');
    await town.nudge('b-dkill', 'release');
    const result = await handle.result();
    expect(result.status, JSON.stringify(result)).toBe('closed');

    const all = await containersOf('b-dkill/r1/a1', gtHome);
    expect(all.map((c) => c.Id)).toEqual([container!.Id]);
    expect((await town.beadState('b-dkill')).runs.map((r) => [r.runId, r.outcome])).toEqual([
      ['b-dkill/r1/a1', 'done'],
    ]);
    expect((await repo.log()).filter((c) => c.body.includes('Gt-Merge-Request'))).toHaveLength(1);
  });
});
