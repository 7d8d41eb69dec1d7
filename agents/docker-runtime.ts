/**
 * The `docker` runtime, through the Docker Engine API (dockerode). The container's name is derived from the run
 * id and its labels carry bead and run: starting a run whose container already exists *adopts* it (after checking
 * the labels say it is that run), so an uncertain start retried any number of times never yields a second agent.
 * The worktree, run directory and requested mounts are bind-mounted at the same paths; the agent reaches the
 * gateway through its unix socket, so the network can stay off (`NetworkMode: none`) unless the rig allows it.
 */
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import Docker from 'dockerode';
import { processTag, readTail, wrapperScript } from './process-runtime';
import { OUTPUT_LOG, type AgentHandle, type AgentLaunch, type AgentRuntimeDriver, type AgentStatus } from './runtime';

export const DEFAULT_DOCKER_SOCKET = '/var/run/docker.sock';
export const LABELS = { run: 'gt.run-id', bead: 'gt.bead-id', role: 'gt.role' } as const;
const CONTAINER_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Docker names allow [a-zA-Z0-9][a-zA-Z0-9_.-]*; run ids end in a fixed `/r<n>/a<n>` so the mapping stays unique. */
export const containerName = (runId: string) => `gt-${runId.replace(/[^a-zA-Z0-9_.-]/g, '-')}`;

interface ApiError {
  statusCode?: number;
  message?: string;
}
const statusOf = (err: unknown) => (err as ApiError)?.statusCode;

/** Splits Docker's multiplexed log stream (8-byte frame headers when the container has no TTY). */
export function demuxLogs(buf: Buffer): string {
  if (buf.length < 8 || ![0, 1, 2].includes(buf[0]!) || buf[1] !== 0 || buf[2] !== 0 || buf[3] !== 0) return buf.toString('utf8');
  const parts: Buffer[] = [];
  let at = 0;
  while (at + 8 <= buf.length) {
    const size = buf.readUInt32BE(at + 4);
    parts.push(buf.subarray(at + 8, at + 8 + size));
    at += 8 + size;
  }
  return Buffer.concat(parts).toString('utf8');
}

export class DockerRuntime implements AgentRuntimeDriver {
  readonly name = 'docker' as const;
  private readonly docker: Docker;

  constructor(private readonly socketPath = process.env.DOCKER_SOCKET ?? DEFAULT_DOCKER_SOCKET) {
    this.docker = new Docker({ socketPath });
  }

  async available(): Promise<{ ok: true } | { ok: false; reason: string }> {
    try {
      await Promise.race([this.docker.ping(), delay(5_000, undefined, { ref: false }).then(() => Promise.reject(new Error('no answer within 5s')))]);
      return { ok: true };
    } catch (err) {
      return { ok: false, reason: `no Docker Engine at ${this.socketPath} (${(err as Error).message})` };
    }
  }

  async startOrAdopt(launch: AgentLaunch): Promise<{ handle: AgentHandle; adopted: boolean }> {
    const name = containerName(launch.runId);
    const existing = await this.inspect(name);
    if (existing) return { handle: await this.adopt(existing, launch), adopted: true };
    let id: string;
    try {
      const created = await this.docker.createContainer(this.spec(launch, name));
      id = created.id;
    } catch (err) {
      // Someone (an earlier, uncertain attempt) created it between our look and our create: adopt theirs.
      if (statusOf(err) !== 409) throw err;
      const raced = await this.inspect(name);
      if (!raced) throw err;
      return { handle: await this.adopt(raced, launch), adopted: true };
    }
    await this.start(id);
    return { handle: { runtime: 'docker', runId: launch.runId, ref: id }, adopted: false };
  }

  async status(handle: AgentHandle, _runDir?: string): Promise<AgentStatus> {
    let info: Docker.ContainerInspectInfo;
    try {
      info = await this.docker.getContainer(handle.ref).inspect();
    } catch (err) {
      // A container that cannot be found is not a confirmed exit (it may be an engine hiccup): keep asking.
      return { state: 'unknown', detail: statusOf(err) === 404 ? `container ${handle.ref} not found` : `inspect failed: ${(err as Error).message}` };
    }
    if (info.State.Status === 'exited' || info.State.Status === 'dead') return { state: 'exited', exitCode: info.State.ExitCode };
    return { state: 'running' };
  }

  async stop(handle: AgentHandle, graceMs: number): Promise<void> {
    try {
      await this.docker.getContainer(handle.ref).stop({ t: Math.max(1, Math.ceil(graceMs / 1000)) });
    } catch (err) {
      // 304: already stopped; 404: already gone.
      if (statusOf(err) !== 304 && statusOf(err) !== 404) throw err;
    }
  }

  /** The wrapper writes to the run directory's output log; the container's own log only has what came before that. */
  async logs(handle: AgentHandle, runDir: string, maxBytes = 64 * 1024): Promise<string> {
    const fromFile = readTail(join(runDir, OUTPUT_LOG), maxBytes);
    if (fromFile) return fromFile;
    const raw = await this.docker.getContainer(handle.ref).logs({ stdout: true, stderr: true, follow: false, tail: 2000 });
    const text = demuxLogs(Buffer.isBuffer(raw) ? raw : Buffer.from(String(raw)));
    return text.length > maxBytes ? text.slice(-maxBytes) : text;
  }

  private async inspect(name: string): Promise<Docker.ContainerInspectInfo | undefined> {
    try {
      return await this.docker.getContainer(name).inspect();
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw err;
    }
  }

  private async adopt(info: Docker.ContainerInspectInfo, launch: AgentLaunch): Promise<AgentHandle> {
    const labels = info.Config?.Labels ?? {};
    if (labels[LABELS.run] !== launch.runId || labels[LABELS.bead] !== launch.beadId) {
      throw Object.assign(
        new Error(`container ${info.Name} exists but belongs to ${labels[LABELS.run] ?? 'something else'} (labels ${JSON.stringify(labels)}), not run ${launch.runId}; remove it by hand`),
        { nonRetryable: true },
      );
    }
    // Created by an attempt that died before starting it: starting it is part of the same single launch.
    if (info.State.Status === 'created') await this.start(info.Id);
    return { runtime: 'docker', runId: launch.runId, ref: info.Id };
  }

  private async start(id: string): Promise<void> {
    try {
      await this.docker.getContainer(id).start();
    } catch (err) {
      if (statusOf(err) !== 304) throw err;
    }
  }

  private spec(launch: AgentLaunch, name: string): Docker.ContainerCreateOptions {
    const binds = [
      ...launch.mounts.map((m) => `${m.path}:${m.path}:${m.writable ? 'rw' : 'ro'}`),
      `${launch.runDir}:${launch.runDir}:rw`,
      `${launch.cwd}:${launch.cwd}:rw`,
    ];
    // The host's PATH means nothing in the image: keep the gt directory (first on the run's PATH) and the usual ones.
    const gtBin = launch.env.PATH?.split(':')[0];
    const env = { ...launch.env, PATH: gtBin ? `${gtBin}:${CONTAINER_PATH}` : CONTAINER_PATH, GT_RUN_DIR: launch.runDir };
    const script = `exec >>"$GT_RUN_DIR/${OUTPUT_LOG}" 2>&1\n${wrapperScript(launch.command)}`;
    return {
      name,
      Image: launch.image,
      Cmd: ['/bin/sh', '-c', script, processTag(launch.runId)],
      WorkingDir: launch.cwd,
      Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
      Labels: { [LABELS.run]: launch.runId, [LABELS.bead]: launch.beadId, [LABELS.role]: launch.role },
      HostConfig: { Binds: binds, NetworkMode: launch.allowNetwork ? 'bridge' : 'none', AutoRemove: false },
    };
  }
}
