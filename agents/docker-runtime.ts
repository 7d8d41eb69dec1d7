/**
 * The `docker` runtime, through the Docker Engine API (dockerode): each run is one container.
 *
 * Invariants:
 *  - Start-or-adopt by run id: the container's name is derived from the run id and the run directory (so two towns
 *    on one engine, or two test runs reusing ids, never share one) and its labels carry bead, run and run directory,
 *    so starting a run whose container already exists *adopts* it (after checking the labels say it is that run). An
 *    uncertain start retried any number of times, or by a new worker after the old one was killed, never yields a
 *    second container.
 *  - The container sees only `cwd` and `agentDir` (read-write) and the launch's `mounts` at the same paths, and only
 *    `launch.env` (PATH reduced to the `gt` directory plus the image's usual directories). The worker-owned `runDir`
 *    is never mounted: the exit code comes from the engine and the output from the engine's log, which the worker
 *    copies into `<runDir>/output.log` (what `gt logs` reads) on every status probe and logs() call.
 *  - It runs as the worker's uid:gid with no capabilities, `no-new-privileges`, a read-only root filesystem (a private
 *    /tmp), the launch's pids / memory (no extra swap) / CPU limits, and no network (`NetworkMode: none`) unless the
 *    rig allows it; the gateway is reached through its unix socket, which is one of the mounts.
 *  - Images are never pulled: a missing image is a non-retryable start error that says how to build it.
 *  - remove() deletes only a container that has stopped; once removed, the run id could start afresh, so the caller
 *    removes a run's container only after its exit has been recorded.
 */
import { createHash } from 'node:crypto';
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import Docker from 'dockerode';
import { DEFAULT_AGENT_IMAGE } from '../domain/rig';
import { DEFAULT_DOCKER_SOCKET, engineProblem, imageBuildHint, imageId } from '../provisioning/docker';
import { processTag, readTail } from './process-runtime';
import {
  OUTPUT_LOG,
  type AgentHandle,
  type AgentLaunch,
  type AgentRuntimeDriver,
  type AgentStatus,
  type ExitHint,
} from './runtime';

export { DEFAULT_DOCKER_SOCKET };
export const LABELS = { run: 'gt.run-id', bead: 'gt.bead-id', role: 'gt.role', runDir: 'gt.run-dir' } as const;
const CONTAINER_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** Worker-owned, next to output.log: the engine timestamp (ns) of the last log entry copied there. */
const LOG_CURSOR = 'output.cursor';

/**
 * Docker names allow [a-zA-Z0-9][a-zA-Z0-9_.-]*; run ids end in a fixed `/r<n>/a<n>` so the mapping stays unique within
 * a town, and the run directory (which is under the town's GT_HOME) tells towns apart.
 */
export const containerName = (runId: string, runDir: string) =>
  `gt-${runId.replace(/[^a-zA-Z0-9_.-]/g, '-')}-${createHash('sha256').update(runDir).digest('hex').slice(0, 10)}`;

interface ApiError {
  statusCode?: number;
  message?: string;
}
const statusOf = (err: unknown) => (err as ApiError)?.statusCode;
const refuse = (message: string) => Object.assign(new Error(message), { nonRetryable: true });

/** Splits Docker's multiplexed log stream (8-byte frame headers when the container has no TTY) into its frames. */
export function demuxFrames(buf: Buffer): Buffer[] {
  if (buf.length < 8 || ![0, 1, 2].includes(buf[0]!) || buf[1] !== 0 || buf[2] !== 0 || buf[3] !== 0)
    return buf.length ? [buf] : [];
  const frames: Buffer[] = [];
  let at = 0;
  while (at + 8 <= buf.length) {
    const size = buf.readUInt32BE(at + 4);
    frames.push(buf.subarray(at + 8, at + 8 + size));
    at += 8 + size;
  }
  return frames;
}

/** `2026-11-29T20:58:35.123456789Z` (RFC 3339, trailing zeros of the fraction trimmed) as nanoseconds since the epoch. */
export function timestampNs(ts: string): bigint | undefined {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z$/.exec(ts);
  if (!m) return undefined;
  return BigInt(Date.parse(`${m[1]}Z`)) * 1_000_000n + BigInt((m[2] ?? '').padEnd(9, '0'));
}

export interface DockerRuntimeOptions {
  /** The network of runs whose rig allows one (`GT_DOCKER_NETWORK`, default `bridge`). */
  network?: string;
  /** The image of launches that name none, and the one available() requires. */
  image?: string;
}

export class DockerRuntime implements AgentRuntimeDriver {
  readonly name = 'docker' as const;
  private readonly docker: Docker;
  private readonly network: string;
  private readonly image: string;
  /** One log copy at a time per run directory, or two probes would append the same entries twice. */
  private readonly syncing = new Map<string, Promise<void>>();

  constructor(
    private readonly socketPath = process.env.DOCKER_SOCKET ?? DEFAULT_DOCKER_SOCKET,
    options: DockerRuntimeOptions = {},
  ) {
    this.docker = new Docker({ socketPath });
    this.network = options.network ?? process.env.GT_DOCKER_NETWORK ?? 'bridge';
    this.image = options.image ?? DEFAULT_AGENT_IMAGE;
  }

  async available(): Promise<{ ok: true } | { ok: false; reason: string }> {
    const problem = await engineProblem(this.docker, 5_000);
    if (problem) return { ok: false, reason: `no Docker Engine at ${this.socketPath} (${problem})` };
    try {
      if (!(await this.hasImage()))
        return { ok: false, reason: `image ${this.image} is missing: ${imageBuildHint(this.image)}` };
    } catch (err) {
      return { ok: false, reason: `cannot inspect image ${this.image}: ${(err as Error).message}` };
    }
    return { ok: true };
  }

  /** Whether the engine has `image` (default: the runtime's default image); never pulls. */
  async hasImage(image = this.image): Promise<boolean> {
    return (await imageId(this.docker, image)) !== undefined;
  }

  async startOrAdopt(launch: AgentLaunch): Promise<{ handle: AgentHandle; adopted: boolean }> {
    const name = containerName(launch.runId, launch.runDir);
    const existing = await this.inspect(name);
    if (existing) return { handle: await this.adopt(existing, launch), adopted: true };
    const image = launch.image ?? this.image;
    // createContainer never pulls; a missing image would be an opaque 404 retried until the start timeout.
    if (!(await this.hasImage(image))) throw refuse(`image ${image} is missing on this host: ${imageBuildHint(image)}`);
    let id: string;
    try {
      const created = await this.docker.createContainer(this.spec(launch, name, image));
      id = created.id;
    } catch (err) {
      // Someone (an earlier, uncertain attempt) created it between our look and our create: adopt theirs.
      if (statusOf(err) !== 409) throw err;
      // The engine reserves the name before the container can be inspected: give the other create a moment.
      for (let tries = 0; tries < 50; tries++) {
        const raced = await this.inspect(name);
        if (raced) return { handle: await this.adopt(raced, launch), adopted: true };
        await delay(100);
      }
      throw err;
    }
    await this.start(id);
    return { handle: { runtime: 'docker', runId: launch.runId, ref: id }, adopted: false };
  }

  async status(handle: AgentHandle, runDir: string): Promise<AgentStatus> {
    let info: Docker.ContainerInspectInfo;
    try {
      info = await this.docker.getContainer(handle.ref).inspect();
    } catch (err) {
      // A container that cannot be found is not a confirmed exit (it may be an engine hiccup): keep asking.
      return {
        state: 'unknown',
        detail:
          statusOf(err) === 404 ? `container ${handle.ref} not found` : `inspect failed: ${(err as Error).message}`,
      };
    }
    // Copied before an exit is reported, so whoever reads the output after the exit reads all of it.
    await this.syncOutput(handle, runDir).catch(() => undefined);
    if (info.State.Status === 'exited' || info.State.Status === 'dead')
      return { state: 'exited', exitCode: info.State.ExitCode };
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

  async logs(handle: AgentHandle, runDir: string, maxBytes = 64 * 1024): Promise<string> {
    // A container already removed (or an engine hiccup) leaves what was copied so far, which is the best there is.
    await this.syncOutput(handle, runDir).catch(() => undefined);
    return readTail(join(runDir, OUTPUT_LOG), maxBytes);
  }

  /** The engine's wait (condition not-running) returns once the container has stopped, or at once if it has. */
  exitHint(handle: AgentHandle): ExitHint {
    const abort = new AbortController();
    const settle = () => undefined;
    const promise = (
      this.docker
        .getContainer(handle.ref)
        .wait({ condition: 'not-running', abortSignal: abort.signal }) as Promise<unknown>
    ).then(settle, settle);
    return { promise, close: () => abort.abort() };
  }

  async remove(handle: AgentHandle): Promise<void> {
    try {
      // Not forced: a running container is refused by the engine (409) rather than killed behind supervision's back.
      await this.docker.getContainer(handle.ref).remove({ force: false, v: true });
    } catch (err) {
      if (statusOf(err) !== 404) throw err;
    }
  }

  /**
   * Appends the engine's log entries newer than the cursor to the run's output log. Entries carry nanosecond
   * timestamps; the cursor is written after the text, so a crash in between repeats entries rather than losing them.
   */
  private syncOutput(handle: AgentHandle, runDir: string): Promise<void> {
    const prior = this.syncing.get(runDir) ?? Promise.resolve();
    const next = prior.then(async () => {
      const cursorFile = join(runDir, LOG_CURSOR);
      let cursor = 0n;
      try {
        cursor = BigInt(readFileSync(cursorFile, 'utf8').trim() || '0');
      } catch {
        // No cursor yet: everything is new.
      }
      const since =
        cursor === 0n ? 0 : `${cursor / 1_000_000_000n}.${String(cursor % 1_000_000_000n).padStart(9, '0')}`;
      const raw = (await this.docker.getContainer(handle.ref).logs({
        stdout: true,
        stderr: true,
        follow: false,
        timestamps: true,
        since,
      } as Docker.ContainerLogsOptions & {
        follow: false;
      })) as unknown;
      const buf = Buffer.isBuffer(raw) ? raw : Buffer.from(String(raw));
      const fresh: Buffer[] = [];
      let last = cursor;
      for (const frame of demuxFrames(buf)) {
        const space = frame.indexOf(0x20);
        const ts = space > 0 ? timestampNs(frame.subarray(0, space).toString('latin1')) : undefined;
        if (ts === undefined || ts <= cursor) continue;
        fresh.push(frame.subarray(space + 1));
        if (ts > last) last = ts;
      }
      if (!fresh.length) return;
      mkdirSync(runDir, { recursive: true });
      appendFileSync(join(runDir, OUTPUT_LOG), Buffer.concat(fresh));
      writeFileSync(cursorFile, String(last));
    });
    const settled = next.catch(() => undefined);
    this.syncing.set(runDir, settled);
    void settled.then(() => {
      if (this.syncing.get(runDir) === settled) this.syncing.delete(runDir);
    });
    return next;
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
    if (
      labels[LABELS.run] !== launch.runId ||
      labels[LABELS.bead] !== launch.beadId ||
      labels[LABELS.runDir] !== launch.runDir
    ) {
      throw refuse(
        `container ${info.Name} exists but belongs to ${labels[LABELS.run] ?? 'something else'} (labels ${JSON.stringify(labels)}), not run ${launch.runId}; remove it by hand`,
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

  private spec(launch: AgentLaunch, name: string, image: string): Docker.ContainerCreateOptions {
    const bind = (path: string, writable: boolean) => ({
      Type: 'bind' as const,
      Source: path,
      Target: path,
      ReadOnly: !writable,
    });
    // The host's PATH means nothing in the image: keep the gt directory (first on the run's PATH) and the usual ones.
    const gtBin = launch.env.PATH?.split(':')[0];
    const env = { ...launch.env, PATH: gtBin ? `${gtBin}:${CONTAINER_PATH}` : CONTAINER_PATH };
    const memory = launch.limits.memoryMb * 1024 * 1024;
    return {
      name,
      Image: image,
      // $0 names the run in the host's process list; the command's exit code is the container's.
      Cmd: ['/bin/sh', '-c', launch.command, processTag(launch.runId)],
      WorkingDir: launch.cwd,
      Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
      // The worker's own ids: files the run writes stay the worker's, and the gateway socket (the worker's) is usable.
      User: `${process.getuid!()}:${process.getgid!()}`,
      Labels: {
        [LABELS.run]: launch.runId,
        [LABELS.bead]: launch.beadId,
        [LABELS.role]: launch.role,
        [LABELS.runDir]: launch.runDir,
      },
      HostConfig: {
        // Mounts (not Binds): a missing source is an error instead of a root-owned directory the engine creates.
        Mounts: [
          bind(launch.cwd, true),
          bind(launch.agentDir, true),
          ...launch.mounts.map((m) => bind(m.path, m.writable)),
        ],
        NetworkMode: launch.allowNetwork ? this.network : 'none',
        CapDrop: ['ALL'],
        SecurityOpt: ['no-new-privileges'],
        ReadonlyRootfs: true,
        Tmpfs: { '/tmp': 'rw,nosuid,nodev,mode=1777' },
        IpcMode: 'private',
        // An init reaps orphans and passes stop's SIGTERM on (a shell as pid 1 would ignore it until the SIGKILL).
        Init: true,
        PidsLimit: launch.limits.pids,
        Memory: memory,
        MemorySwap: memory,
        NanoCpus: Math.round(launch.limits.cpus * 1e9),
        AutoRemove: false,
        // The copy into output.log reads this log; a bound keeps a noisy run from filling the engine's disk.
        LogConfig: { Type: 'json-file', Config: { 'max-size': '20m', 'max-file': '3' } },
      },
    };
  }
}
