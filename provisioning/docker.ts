/**
 * Provisioning of the `docker` runtime: a Docker Engine answering on its socket, and the agent image, built offline.
 *
 * Invariants:
 *  - An engine that answers is used as it is: nothing here restarts, reconfigures or stops a running dockerd.
 *  - dockerd is started only as root, only when its socket does not answer and no dockerd process exists, with the
 *    flags that need neither a default bridge nor iptables (`--bridge=none --iptables=false --ip6tables=false`); it
 *    runs detached (its own session) so it outlives the command that started it, logging to the cache directory.
 *  - The image is never pulled (no registry is assumed): it is a Debian minbase root filesystem made by `debootstrap`
 *    from the host's apt mirror with the packages of AGENT_IMAGE_RECIPE, imported with the Engine API. Its tarball is
 *    cached under the user's cache dir, keyed by the recipe, so an engine that lost its images re-imports in seconds;
 *    an engine that has the image costs one inspect.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  createReadStream,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
} from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import { DEFAULT_AGENT_IMAGE } from '../domain/rig';
import { findOnPath } from './temporal-cli';

const run = promisify(execFile);

export const DEFAULT_DOCKER_SOCKET = '/var/run/docker.sock';
export const DOCKERD_FLAGS = ['--bridge=none', '--iptables=false', '--ip6tables=false'];
/** What the default image is made of; images/agent/Dockerfile installs the same packages on debian:bookworm-slim. */
export const AGENT_IMAGE_RECIPE = {
  suite: 'bookworm',
  variant: 'minbase',
  packages: ['git', 'nodejs', 'ca-certificates'],
} as const;
const FALLBACK_MIRROR = 'http://deb.debian.org/debian';

/** The one line that tells an operator how to get the default image (shown by the runtime when it is missing). */
export const imageBuildHint = (tag: string) =>
  `build it with \`gt image build${tag === DEFAULT_AGENT_IMAGE ? '' : ` --tag ${tag}`}\` (offline, as root) or \`docker build -t ${tag} images/agent\` (needs Docker Hub)`;

export type Progress = (message: string) => void;

const gastownCache = () => join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'gastown');
const recipeKey = () => createHash('sha256').update(JSON.stringify(AGENT_IMAGE_RECIPE)).digest('hex').slice(0, 12);
/** The cached root filesystem of the recipe (an uncompressed tar: importing it is bound by disk speed, not gzip). */
export const cachedRootfsPath = () =>
  join(gastownCache(), 'agent-image', `${AGENT_IMAGE_RECIPE.suite}-${recipeKey()}.tar`);

const isRoot = () => process.getuid?.() === 0;
const sbinPath = () => `${process.env.PATH ?? ''}:/usr/local/sbin:/usr/sbin:/sbin`;

/** undefined when the engine answers, else why not. */
export async function engineProblem(docker: Docker, timeoutMs = 3_000): Promise<string | undefined> {
  try {
    await Promise.race([
      docker.ping(),
      delay(timeoutMs, undefined, { ref: false }).then(() =>
        Promise.reject(new Error(`no answer within ${timeoutMs / 1000}s`)),
      ),
    ]);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

function dockerdRunning(): boolean {
  try {
    return readdirSync('/proc').some(
      (pid) => /^\d+$/.test(pid) && readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'dockerd',
    );
  } catch {
    return false;
  }
}

function aptInstall(packages: string[], onProgress: Progress): void {
  onProgress(`Installing ${packages.join(', ')} with apt-get…`);
  // Synchronous on purpose: provisioning has nothing else to do meanwhile, and apt must never run twice at once.
  const opts = { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, stdio: 'inherit' as const };
  execFileSync('apt-get', ['update', '-qq'], opts);
  execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...packages], opts);
}

export type EngineResult = { ok: true; started: boolean; socketPath: string } | { ok: false; reason: string };

/**
 * A Docker Engine answering at `socketPath`: the running one, or (as root) dockerd installed from Debian's `docker.io`
 * when missing and started with DOCKERD_FLAGS. Not root and no engine: why the docker tests will skip.
 */
export async function ensureDockerEngine(
  opts: { socketPath?: string; onProgress?: Progress; waitMs?: number } = {},
): Promise<EngineResult> {
  const socketPath = opts.socketPath ?? process.env.DOCKER_SOCKET ?? DEFAULT_DOCKER_SOCKET;
  const onProgress = opts.onProgress ?? (() => undefined);
  const docker = new Docker({ socketPath });
  const problem = await engineProblem(docker);
  if (!problem) return { ok: true, started: false, socketPath };
  if (!isRoot())
    return {
      ok: false,
      reason: `no Docker Engine at ${socketPath} (${problem}) and not root, so none is started here: start dockerd or run as root`,
    };

  if (!dockerdRunning()) {
    let dockerd = findOnPath('dockerd', sbinPath());
    if (!dockerd && process.env.GT_SKIP_SYSTEM_PACKAGES !== '1' && findOnPath('apt-get', sbinPath())) {
      try {
        // debootstrap too when missing: the image is built next, and one apt run is cheaper than two.
        aptInstall(['docker.io', ...(findOnPath('debootstrap', sbinPath()) ? [] : ['debootstrap'])], onProgress);
      } catch (err) {
        return { ok: false, reason: `installing docker.io failed: ${(err as Error).message}` };
      }
      dockerd = findOnPath('dockerd', sbinPath());
    }
    if (!dockerd)
      return {
        ok: false,
        reason: `no Docker Engine at ${socketPath} and no dockerd to start (apt-get install docker.io)`,
      };
    // No dockerd runs, so a pid file is stale (a machine restarted with /var/run kept); dockerd refuses to start while
    // the pid in it belongs to any live process.
    rmSync('/var/run/docker.pid', { force: true });
    const logPath = join(gastownCache(), 'dockerd.log');
    mkdirSync(gastownCache(), { recursive: true });
    const args = [
      ...DOCKERD_FLAGS,
      ...(socketPath === DEFAULT_DOCKER_SOCKET ? [] : ['--host', `unix://${socketPath}`]),
    ];
    onProgress(`Starting ${dockerd} ${args.join(' ')} (log: ${logPath})…`);
    const log = openSync(logPath, 'a');
    const child = spawn(dockerd, args, { detached: true, stdio: ['ignore', log, log] });
    closeSync(log);
    child.unref();
  } else {
    onProgress(`dockerd is running but ${socketPath} does not answer yet; waiting for it…`);
  }
  const deadline = Date.now() + (opts.waitMs ?? 60_000);
  let last = problem;
  while (Date.now() < deadline) {
    const p = await engineProblem(docker);
    if (!p) return { ok: true, started: true, socketPath };
    last = p;
    await delay(250);
  }
  return {
    ok: false,
    reason: `dockerd did not answer at ${socketPath} within ${(opts.waitMs ?? 60_000) / 1000}s (${last}); see ${join(gastownCache(), 'dockerd.log')}`,
  };
}

/** The first Debian archive the host's apt uses (not its security suite): debootstrap fetches from the same place. */
export function debianMirror(): string {
  const uris: string[] = [];
  const read = (file: string) => {
    try {
      return readFileSync(file, 'utf8');
    } catch {
      return '';
    }
  };
  const listDir = '/etc/apt/sources.list.d';
  const files = [
    '/etc/apt/sources.list',
    ...(existsSync(listDir)
      ? readdirSync(listDir)
          .sort()
          .map((f) => join(listDir, f))
      : []),
  ];
  for (const file of files) {
    if (file.endsWith('.sources')) {
      // deb822 stanzas: `URIs:` of a stanza whose Types include deb.
      for (const stanza of read(file).split(/\n\s*\n/)) {
        if (!/^Types:.*\bdeb\b/m.test(stanza) || /^Enabled:\s*no/im.test(stanza)) continue;
        uris.push(...(/^URIs:\s*(.+)$/m.exec(stanza)?.[1]?.trim().split(/\s+/) ?? []));
      }
    } else if (file.endsWith('.list') || file === '/etc/apt/sources.list') {
      for (const line of read(file).split('\n')) {
        const m = /^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)/.exec(line);
        if (m) uris.push(m[1]!);
      }
    }
  }
  return uris.find((u) => /^https?:\/\//.test(u) && !/security/.test(u)) ?? FALLBACK_MIRROR;
}

/** `repo[:tag]` as the Engine's import wants it (a colon after the last slash is the tag). */
export function splitTag(ref: string): { repo: string; tag: string } {
  const colon = ref.lastIndexOf(':');
  return colon > ref.lastIndexOf('/')
    ? { repo: ref.slice(0, colon), tag: ref.slice(colon + 1) }
    : { repo: ref, tag: 'latest' };
}

export async function imageId(docker: Docker, ref: string): Promise<string | undefined> {
  try {
    return (await docker.getImage(ref).inspect()).Id;
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return undefined;
    throw err;
  }
}

export interface ImageResult {
  tag: string;
  id: string;
  /** engine: it was there already; cache: imported from the cached root filesystem; debootstrap: built now. */
  source: 'engine' | 'cache' | 'debootstrap';
  mirror?: string;
  ms: number;
}

export interface BuildOptions {
  socketPath?: string;
  tag?: string;
  mirror?: string;
  onProgress?: Progress;
}

/** Makes the recipe's root filesystem with debootstrap and caches it as a tar; returns the tar's path. */
async function debootstrapRootfs(mirror: string, onProgress: Progress): Promise<string> {
  if (!isRoot()) throw new Error('debootstrap needs root (it chroots and creates device nodes)');
  if (!findOnPath('debootstrap', sbinPath())) {
    if (process.env.GT_SKIP_SYSTEM_PACKAGES === '1' || !findOnPath('apt-get', sbinPath()))
      throw new Error('debootstrap is not installed (apt-get install debootstrap)');
    aptInstall(['debootstrap'], onProgress);
  }
  const tarPath = cachedRootfsPath();
  const dir = `${tarPath}.rootfs`;
  mkdirSync(join(tarPath, '..'), { recursive: true });
  await discardRootfs(dir);
  const { suite, variant, packages } = AGENT_IMAGE_RECIPE;
  onProgress(
    `debootstrap --variant=${variant} --include=${packages.join(',')} ${suite} from ${mirror} (about a minute)…`,
  );
  try {
    await run(
      findOnPath('debootstrap', sbinPath())!,
      [`--variant=${variant}`, `--include=${packages.join(',')}`, suite, dir, mirror],
      { maxBuffer: 64 * 1024 * 1024 },
    );
  } catch (err) {
    const detail =
      (err as { stderr?: string }).stderr?.trim().split('\n').slice(-3).join(' | ') || (err as Error).message;
    await discardRootfs(dir);
    throw new Error(`debootstrap of ${suite} from ${mirror} failed: ${detail}`);
  }
  try {
    // Downloaded packages and indexes are only build leftovers: a third of the size.
    for (const leftovers of ['var/cache/apt/archives', 'var/lib/apt/lists']) {
      for (const f of readdirSync(join(dir, leftovers)))
        if (f !== 'partial' && f !== 'lock') rmSync(join(dir, leftovers, f), { recursive: true, force: true });
    }
    onProgress(`Caching the root filesystem in ${tarPath}…`);
    // --one-file-system: never archive something still mounted inside the tree.
    await run('tar', ['--one-file-system', '-C', dir, '-cf', `${tarPath}.tmp`, '.'], { maxBuffer: 16 * 1024 * 1024 });
    renameSync(`${tarPath}.tmp`, tarPath);
  } finally {
    rmSync(`${tarPath}.tmp`, { force: true });
    await discardRootfs(dir);
  }
  return tarPath;
}

/** Removes a (possibly half-built) root filesystem, after unmounting what debootstrap may have left mounted in it. */
async function discardRootfs(dir: string): Promise<void> {
  if (!existsSync(dir)) return;
  for (const m of ['proc', 'sys', 'dev/pts', 'dev']) await run('umount', ['-l', join(dir, m)]).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
}

async function importRootfs(docker: Docker, tarPath: string, ref: string): Promise<string> {
  const { repo, tag } = splitTag(ref);
  // The runtime always gives a command; CMD only makes `docker run <image>` useful by hand.
  const stream = await docker.importImage(createReadStream(tarPath), {
    repo,
    tag,
    changes: ['CMD ["/bin/bash"]'],
  } as object);
  const output = await new Promise<{ error?: string }[]>((resolve, reject) =>
    docker.modem.followProgress(stream, (err: Error | null, out: { error?: string }[]) =>
      err ? reject(err) : resolve(out),
    ),
  );
  const failed = output.find((o) => o.error);
  if (failed) throw new Error(`importing ${tarPath} as ${ref} failed: ${failed.error}`);
  const id = await imageId(docker, ref);
  if (!id) throw new Error(`importing ${tarPath} as ${ref} left no image`);
  return id;
}

/**
 * Builds the agent image now: a fresh debootstrap (which also refreshes the cache), or with `fromCache` the cached root
 * filesystem when there is one. The engine must answer; building needs root.
 */
export async function buildAgentImage(opts: BuildOptions & { fromCache?: boolean } = {}): Promise<ImageResult> {
  const started = Date.now();
  const tag = opts.tag ?? DEFAULT_AGENT_IMAGE;
  const onProgress = opts.onProgress ?? (() => undefined);
  const socketPath = opts.socketPath ?? process.env.DOCKER_SOCKET ?? DEFAULT_DOCKER_SOCKET;
  const docker = new Docker({ socketPath });
  const problem = await engineProblem(docker);
  if (problem) throw new Error(`no Docker Engine at ${socketPath} (${problem})`);
  if (opts.fromCache && existsSync(cachedRootfsPath())) {
    onProgress(`Importing the cached root filesystem ${cachedRootfsPath()} as ${tag}…`);
    return { tag, id: await importRootfs(docker, cachedRootfsPath(), tag), source: 'cache', ms: Date.now() - started };
  }
  const mirror = opts.mirror ?? debianMirror();
  const tarPath = await debootstrapRootfs(mirror, onProgress);
  onProgress(`Importing ${tarPath} as ${tag}…`);
  return { tag, id: await importRootfs(docker, tarPath, tag), source: 'debootstrap', mirror, ms: Date.now() - started };
}

/** The agent image as the engine has it, else imported from the cache, else built. */
export async function ensureAgentImage(opts: BuildOptions = {}): Promise<ImageResult> {
  const started = Date.now();
  const tag = opts.tag ?? DEFAULT_AGENT_IMAGE;
  const docker = new Docker({ socketPath: opts.socketPath ?? process.env.DOCKER_SOCKET ?? DEFAULT_DOCKER_SOCKET });
  const id = await imageId(docker, tag);
  if (id) return { tag, id, source: 'engine', ms: Date.now() - started };
  return buildAgentImage({ ...opts, tag, fromCache: true });
}
