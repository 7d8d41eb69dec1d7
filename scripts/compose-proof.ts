/**
 * `npm run compose:proof`: what of docker-compose.yml and Dockerfile can be proven on a machine that reaches no image
 * registry (docs/deployment.md, "What the compose proof exercises"):
 *   1. compose's own loader (compose-spec/compose-go, provisioning/compose-config.ts) resolves the file;
 *   2. a Docker Engine answers (Debian's docker.io, started as provisioning/docker.ts does);
 *   3. a local Node base image: the agent image's Debian bookworm root filesystem (debootstrap, never pulled) plus this
 *      machine's Node and npm of the Dockerfile's Node major, and a `node` user as in the official image;
 *   4. `docker build` of the project's Dockerfile on that base (NODE_IMAGE build arg; the build's RUN steps reach the
 *      npm registry and the Debian mirror through the host's network, as they would on any build machine);
 *   5. the image checked: its user, entry, health check and bundles, `gt --help`, git and bubblewrap inside;
 *   6. the image's worker run for real against a Temporal dev server on loopback: its gateway's /healthz answers,
 *      then `docker stop` drains it and it exits 0.
 * It prints a line per step with its duration and exits non-zero at the first failure, with the reason in one line.
 *
 *   npm run compose:proof [-- --tag gastown-worker:proof] [--keep]
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { promisify } from 'node:util';
import { z } from 'zod';
import { composeConfig, resolveComposeConfig } from '../provisioning/compose-config';
import { repoRoot } from '../provisioning/compose-settings';
import { startDevServer } from '../provisioning/dev-server';
import { ensureAgentImage, ensureDockerEngine } from '../provisioning/docker';
import { findOnPath } from '../provisioning/temporal-cli';
import { freePort } from '../provisioning/prod-stack';

const run = promisify(execFile);
const { values } = parseArgs({
  options: {
    tag: { type: 'string', default: 'gastown-worker:proof' },
    keep: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
const tag = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._/-]*:[\w.-]+$/, 'expected an image reference such as gastown-worker:proof')
  .safeParse(values.tag);
if (values.help || !tag.success) {
  if (!tag.success) console.error(`compose:proof: --tag: ${tag.error.issues[0]!.message}`);
  console.error('usage: npm run compose:proof -- [--tag IMAGE:TAG] [--keep]');
  process.exit(values.help ? 0 : 2);
}
const IMAGE = tag.data;

const t0 = Date.now();
const timings: [string, number][] = [];
async function step<T>(name: string, body: () => Promise<T>): Promise<T> {
  const started = Date.now();
  console.log(`… ${name}`);
  try {
    const result = await body();
    const ms = Date.now() - started;
    timings.push([name, ms]);
    console.log(`✓ ${name} (${(ms / 1000).toFixed(1)} s)`);
    return result;
  } catch (err) {
    console.error(`✗ ${name}: ${(err as Error).message.split('\n')[0]}`);
    process.exit(1);
  }
}

const docker = async (args: string[], opts: { quiet?: boolean; env?: NodeJS.ProcessEnv } = {}) => {
  try {
    const { stdout } = await run('docker', args, { maxBuffer: 64 * 1024 * 1024, env: opts.env ?? process.env });
    return stdout.trim();
  } catch (err) {
    const e = err as Error & { stderr?: string; stdout?: string };
    const tail = `${e.stdout ?? ''}${e.stderr ?? ''}`.trim().split('\n').slice(-3).join(' | ');
    throw new Error(`docker ${args.slice(0, 2).join(' ')} failed: ${tail || e.message}`);
  }
};

/** A `docker build` with the classic builder (BuildKit would fetch its Dockerfile frontend from a registry). */
async function dockerBuild(context: string, args: string[], logFile: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = spawn('docker', ['build', '--force-rm', ...args, context], {
      env: { ...process.env, DOCKER_BUILDKIT: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const onData = (d: Buffer) => {
      out += d.toString();
      writeFileSync(logFile, out);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('error', reject);
    child.once('exit', (code) =>
      code === 0
        ? resolve()
        : reject(
            new Error(
              `docker build exited ${code}: ${out.trim().split('\n').slice(-3).join(' | ')} (full log: ${logFile})`,
            ),
          ),
    );
  });
}

const scratch = mkdtempSync(join(tmpdir(), 'gt-compose-proof-'));
const LOCAL_CAS = '/usr/local/share/ca-certificates';

if (!findOnPath('docker')) {
  console.error('compose:proof: no docker CLI on PATH (apt-get install docker.io)');
  process.exit(1);
}

await step('docker-compose.yml resolves with compose-go (what `docker compose config` runs)', async () => {
  const tool = await resolveComposeConfig((m) => console.log(`  ${m}`));
  if (!tool.available) throw new Error(tool.reason);
  const result = await composeConfig(tool.path, { GT_GATEWAY_SECRET: randomBytes(32).toString('hex') });
  if (!result.ok) throw new Error(result.error);
});

await step('a Docker Engine answers', async () => {
  const engine = await ensureDockerEngine({ onProgress: (m) => console.log(`  ${m}`) });
  if (!engine.ok) throw new Error(engine.reason);
});

// The Dockerfile's Node major, from its default base (node:<major>.<minor>.<patch>-…).
const dockerfile = readFileSync(join(repoRoot, 'Dockerfile'), 'utf8');
const pinned = /^ARG NODE_IMAGE=node:(\d+)\.\d+\.\d+\S*$/m.exec(dockerfile);
const nodeBase = `gastown-local/node:${pinned?.[1] ?? 'unknown'}-bookworm`;

await step(`a local Node base image ${nodeBase} (Debian bookworm root filesystem + this machine's Node)`, async () => {
  if (!pinned) throw new Error('the Dockerfile has no `ARG NODE_IMAGE=node:<x.y.z>-…` line');
  const major = process.versions.node.split('.')[0];
  if (major !== pinned[1])
    throw new Error(`this machine runs Node ${process.versions.node}; the Dockerfile pins Node ${pinned[1]}`);
  const agent = await ensureAgentImage({ onProgress: (m) => console.log(`  ${m}`) });
  const context = join(scratch, 'node-base');
  const node = realpathSync(process.execPath);
  // npm ships beside node: <prefix>/bin/node and <prefix>/lib/node_modules/npm.
  const npm = join(dirname(dirname(node)), 'lib', 'node_modules', 'npm');
  cpSync(node, join(context, 'node'));
  cpSync(npm, join(context, 'npm'), { recursive: true });
  // This machine's extra certificate authorities (e.g. an egress proxy's): the build's npm ci and apt-get go out
  // through the same network as the host's. Public certificates, no keys; the base and images from it trust them.
  mkdirSync(join(context, 'ca'));
  const extraCas = existsSync(LOCAL_CAS) ? readdirSync(LOCAL_CAS).filter((f) => f.endsWith('.crt')) : [];
  for (const f of extraCas) cpSync(join(LOCAL_CAS, f), join(context, 'ca', f));
  writeFileSync(
    join(context, 'Dockerfile'),
    [
      `FROM ${agent.tag}`,
      'COPY node /usr/local/bin/node',
      'COPY npm /usr/local/lib/node_modules/npm',
      'COPY ca /usr/local/share/ca-certificates/',
      // Node reads its own roots, not the system's: point it at the system bundle that now holds the extra ones.
      'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt',
      // As in the official image: npm and npx on PATH, a `node` user with uid 1000.
      'RUN update-ca-certificates >/dev/null \\',
      ' && ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \\',
      ' && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \\',
      ' && (id node >/dev/null 2>&1 || useradd --uid 1000 --create-home --shell /bin/bash node) \\',
      ' && node --version && npm --version',
      '',
    ].join('\n'),
  );
  await dockerBuild(context, ['-t', nodeBase], join(scratch, 'node-base.log'));
});

// The classic builder leaves the build stage behind as an untagged image: what this run adds is removed at the end.
const dangling = async () =>
  new Set((await docker(['images', '--filter', 'dangling=true', '--quiet', '--no-trunc'])).split('\n').filter(Boolean));
const danglingBefore = await dangling();

await step(`docker build of Dockerfile on ${nodeBase} as ${IMAGE}`, async () => {
  console.log(`  (log: ${join(scratch, 'image.log')}; npm ci and apt-get reach their registries through the host)`);
  await dockerBuild(
    repoRoot,
    ['--network', 'host', '--build-arg', `NODE_IMAGE=${nodeBase}`, '-t', IMAGE],
    join(scratch, 'image.log'),
  );
});

await step('the image: user, entry, health check, bundles, gt, git and bubblewrap', async () => {
  const Config = z.object({
    User: z.string(),
    Cmd: z.array(z.string()),
    Env: z.array(z.string()),
    StopSignal: z.string().optional(),
    Healthcheck: z.object({ Test: z.array(z.string()) }),
  });
  const config = Config.parse(JSON.parse(await docker(['image', 'inspect', '--format', '{{json .Config}}', IMAGE])));
  const problems = [
    config.User === 'node' ? '' : `runs as ${config.User}, not node`,
    config.Cmd.join(' ') === 'node --import tsx worker/main.ts' ? '' : `runs ${config.Cmd.join(' ')}`,
    config.StopSignal === 'SIGTERM' ? '' : `stop signal ${config.StopSignal}`,
    config.Healthcheck.Test.join(' ').includes('/healthz') ? '' : 'no /healthz health check',
    config.Env.includes('GT_WORKFLOW_BUNDLE=/app/dist/workflow-bundle.js') ? '' : 'no GT_WORKFLOW_BUNDLE',
  ].filter(Boolean);
  if (problems.length) throw new Error(problems.join('; '));
  const inside = await docker([
    'run',
    '--rm',
    '--network',
    'none',
    IMAGE,
    'sh',
    '-c',
    'set -e; test -s dist/workflow-bundle.js; test -s dist/gt-agent.cjs; test -s dist/gt-cli/cli.mjs; ' +
      'gt --help >/dev/null; git --version; bwrap --version; node --version; id -un',
  ]);
  console.log(`  ${inside.split('\n').join('; ')}`);
});

await step(
  "the image's worker against a Temporal server: /healthz answers, docker stop drains it, exit 0",
  async () => {
    const server = await startDevServer({ namespace: 'default' });
    const name = `gt-compose-proof-${process.pid}`;
    try {
      const [gateway, metrics] = [await freePort(), await freePort()];
      // Host networking: the engine runs without a bridge here; the worker reaches the server on loopback.
      await docker([
        'run',
        '-d',
        '--name',
        name,
        '--network',
        'host',
        '-e',
        `TEMPORAL_ADDRESS=${server.address}`,
        '-e',
        'GT_TASK_QUEUE=compose-proof',
        '-e',
        `GT_GATEWAY_SECRET=${randomBytes(32).toString('hex')}`,
        '-e',
        'GT_GATEWAY_HOST=127.0.0.1',
        '-e',
        `GT_GATEWAY_PORT=${gateway}`,
        '-e',
        `GT_METRICS_ADDRESS=127.0.0.1:${metrics}`,
        '-e',
        'GT_SHUTDOWN_GRACE=10s',
        IMAGE,
      ]);
      const deadline = Date.now() + 90_000;
      for (;;) {
        const ok = await fetch(`http://127.0.0.1:${gateway}/healthz`).then(
          (r) => r.ok,
          () => false,
        );
        if (ok) break;
        const state = await docker(['inspect', '--format', '{{.State.Status}}', name]);
        if (state !== 'running' || Date.now() > deadline)
          throw new Error(
            `the worker ${state === 'running' ? 'never answered /healthz' : `is ${state}`}: ${(await docker(['logs', '--tail', '3', name]).catch(() => '')).split('\n').join(' | ')}`,
          );
        await new Promise((r) => setTimeout(r, 500));
      }
      await docker(['stop', '--time', '45', name]);
      const exit = await docker(['inspect', '--format', '{{.State.ExitCode}}', name]);
      if (exit !== '0') throw new Error(`the worker exited ${exit} on docker stop`);
    } finally {
      await docker(['rm', '-f', name]).catch(() => undefined);
      await server.stop();
    }
  },
);

if (!values.keep) {
  await docker(['image', 'rm', IMAGE]).catch(() => undefined);
  for (const id of await dangling())
    if (!danglingBefore.has(id)) await docker(['image', 'rm', id]).catch(() => undefined);
  rmSync(scratch, { recursive: true, force: true });
}
console.log(
  `\ncompose proof passed in ${((Date.now() - t0) / 1000).toFixed(0)} s:\n${timings.map(([n, ms]) => `  ${(ms / 1000).toFixed(1).padStart(6)} s  ${n}`).join('\n')}`,
);
process.exit(0);
