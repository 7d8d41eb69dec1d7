/**
 * Production deployment, validated without a Docker engine (none on the build machines): the compose file and the
 * Dockerfile are parsed and cross-checked against the code, and the compose service that creates the namespace and
 * search attributes runs for real (its script, the real `temporal` CLI) against the suite's Temporal server.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import dockerignoreMatcher from '@balena/dockerignore';
import { Connection } from '@temporalio/client';
import { SearchAttributeType } from '@temporalio/common';
import proto from '@temporalio/proto';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { z } from 'zod';
import { ALL_SEARCH_ATTRIBUTES } from '../domain/search-attributes';
import { COMPOSE_DYNAMIC_CONFIG, HISTORY_QUEUE_POLL_RPS, TOWN_DYNAMIC_CONFIG } from '../provisioning/server-settings';
import { resolveTemporalCli } from '../provisioning/temporal-cli';
import { defaultWorkflowBundlePath, productionSettingsFromEnv } from '../worker/main';
import { repoRoot } from './helpers/town';
import { temporalAddress } from './helpers/server';

const read = (p: string) => readFileSync(join(repoRoot, p), 'utf8');
const pkg = z
  .object({
    version: z.string(),
    scripts: z.record(z.string(), z.string()),
    dependencies: z.record(z.string(), z.string()),
  })
  .parse(JSON.parse(read('package.json')));

const Service = z.object({
  image: z.string().optional(),
  build: z.unknown().optional(),
  depends_on: z
    .record(
      z.string(),
      z.object({ condition: z.enum(['service_started', 'service_healthy', 'service_completed_successfully']) }),
    )
    .default({}),
  environment: z.record(z.string(), z.string()).default({}),
  healthcheck: z.object({ test: z.array(z.string()).min(2) }).optional(),
  volumes: z.array(z.string()).default([]),
  configs: z.array(z.object({ source: z.string(), target: z.string() })).default([]),
  ports: z.array(z.string()).default([]),
  restart: z.string().optional(),
  command: z.union([z.string(), z.array(z.string())]).optional(),
  profiles: z.array(z.string()).optional(),
  stop_grace_period: z.string().optional(),
});
const Compose = z.object({
  services: z.record(z.string(), Service),
  volumes: z.record(z.string(), z.unknown().nullable()).default({}),
  configs: z
    .record(z.string(), z.union([z.object({ content: z.string() }), z.object({ file: z.string() })]))
    .default({}),
});
const compose = Compose.parse(parse(read('docker-compose.yml')));
const services = compose.services;

/** `${VAR:-default}` → default, `${VAR:?msg}` → placeholder: the value a user who set nothing would get. */
const interpolate = (s: string) =>
  s.replace(/\$\{[A-Z_]+:-([^}]*)\}/g, '$1').replace(/\$\{[A-Z_]+:\?[^}]*\}/g, 'required');
/** Compose escapes `$` as `$$` in commands; the shell sees one. */
const shellOf = (command: Service['command']) =>
  (Array.isArray(command) ? command.join(' ') : (command ?? '')).replace(/\$\$/g, '$');
type Service = z.infer<typeof Service>;

const saTypeName: Record<string, string> = {
  [SearchAttributeType.KEYWORD]: 'Keyword',
  [SearchAttributeType.INT]: 'Int',
  [SearchAttributeType.TEXT]: 'Text',
  [SearchAttributeType.BOOL]: 'Bool',
  [SearchAttributeType.DOUBLE]: 'Double',
  [SearchAttributeType.DATETIME]: 'Datetime',
  [SearchAttributeType.KEYWORD_LIST]: 'KeywordList',
};
const expectedSearchAttributes = ALL_SEARCH_ATTRIBUTES.map((k) => `${k.name}=${saTypeName[k.type]}`).sort();

describe('docker-compose.yml', () => {
  it('has the production stack: postgres, schema setup, server, namespace + search attributes, UI, worker', () => {
    expect(Object.keys(services)).toEqual(
      expect.arrayContaining([
        'postgresql',
        'temporal-admin-tools',
        'temporal',
        'temporal-create-namespace',
        'temporal-ui',
        'worker',
      ]),
    );
    expect(services.temporal!.environment).toMatchObject({
      DB: 'postgres12',
      POSTGRES_SEEDS: 'postgresql',
      BIND_ON_IP: '0.0.0.0',
    });
    expect(shellOf(services['temporal-admin-tools']!.command)).toMatch(
      /temporal-sql-tool --plugin postgres12 .* update-schema/,
    );
  });

  it('pins every image to a version', () => {
    for (const [name, svc] of Object.entries(services)) {
      expect(svc.image ?? svc.build, `${name} has an image or a build`).toBeDefined();
      if (!svc.image) continue;
      const tag = /:([^/:]+)$/.exec(svc.image)?.[1];
      expect(tag, `${name}: ${svc.image} must carry a version tag`).toMatch(/^\d+(\.\d+)+/);
    }
    expect(services.worker!.image).toBe(`gastown-worker:${pkg.version}`);
  });

  it('references only services, volumes and configs that exist, with health checks where waited on', () => {
    for (const [name, svc] of Object.entries(services)) {
      for (const [target, { condition }] of Object.entries(svc.depends_on)) {
        const dep = services[target];
        expect(dep, `${name} depends on unknown service ${target}`).toBeDefined();
        if (condition === 'service_healthy')
          expect(dep!.healthcheck, `${name} waits for ${target} to be healthy, which has no healthcheck`).toBeDefined();
        if (condition === 'service_completed_successfully')
          expect(dep!.restart ?? 'no', `${target} is waited on to complete, so it must be a one-shot`).toMatch(
            /^(no|on-failure(:\d+)?)$/,
          );
        // A service in an optional profile cannot be a dependency of an always-on one.
        if (!svc.profiles) expect(dep!.profiles, `${name} depends on profile-only ${target}`).toBeUndefined();
      }
      for (const v of svc.volumes) {
        const source = v.split(':')[0]!;
        if (v.includes(':') && !source.startsWith('.') && !source.startsWith('/'))
          expect(compose.volumes, `${name} mounts unknown volume ${source}`).toHaveProperty(source);
      }
      for (const c of svc.configs)
        expect(compose.configs, `${name} uses unknown config ${c.source}`).toHaveProperty(c.source);
    }
    for (const name of ['postgresql', 'temporal', 'worker'])
      expect(services[name]!.healthcheck, `${name} healthcheck`).toBeDefined();
    const dynamicConfig = services.temporal!.environment.DYNAMIC_CONFIG_FILE_PATH!;
    expect(services.temporal!.configs.map((c) => c.target)).toContain(`/etc/temporal/${dynamicConfig}`);
    const config = compose.configs['temporal-dynamic-config']!;
    expect(config).toEqual({ file: `./${COMPOSE_DYNAMIC_CONFIG}` });
    expect(parse(read(COMPOSE_DYNAMIC_CONFIG))).toHaveProperty(['limit.maxIDLength']);
  });

  it("runs the server with the town's dynamic config, read from the same values as the code", () => {
    // provisioning/server-settings.ts owns the values; the file compose mounts must say exactly the same.
    const file = z
      .record(z.string(), z.array(z.object({ value: z.unknown(), constraints: z.object({}).strict() })).length(1))
      .parse(parse(read(COMPOSE_DYNAMIC_CONFIG)));
    const town = Object.fromEntries(
      Object.entries(file)
        .filter(([key]) => key !== 'limit.maxIDLength')
        .map(([key, [v]]) => [key, v!.value]),
    );
    expect(town).toEqual(TOWN_DYNAMIC_CONFIG);
    expect(Object.keys(HISTORY_QUEUE_POLL_RPS).sort()).toEqual(
      ['transfer', 'timer', 'visibility', 'outbound'].map((q) => `history.${q}ProcessorMaxPollRPS`).sort(),
    );
  });

  it('publishes Temporal and its Web UI on loopback only', () => {
    const published = Object.entries(services).flatMap(([name, svc]) => svc.ports.map((p) => ({ name, p })));
    expect(published.map((x) => x.name).sort()).toEqual(['codec-server', 'temporal', 'temporal-ui']);
    for (const { name, p } of published)
      expect(p, `${name} publishes ${p} beyond loopback`).toMatch(/^127\.0\.0\.1:\d+:\d+$/);
  });

  it('refuses aes-gcm without the town key instead of letting each replica invent one', () => {
    const worker = services.worker!;
    const home = mkdtempSync(join(tmpdir(), 'gt-compose-home-'));
    const bundle = join(home, 'bundle.js');
    writeFileSync(bundle, '');
    // The worker's environment as compose gives it when the user set GT_PAYLOAD_CODEC=aes-gcm and nothing else.
    const env: NodeJS.ProcessEnv = {
      ...Object.fromEntries(Object.entries(worker.environment).map(([k, v]) => [k, interpolate(v)])),
      GT_PAYLOAD_CODEC: 'aes-gcm',
      GT_HOME: home,
      GT_WORKFLOW_BUNDLE: bundle,
    };
    expect(env.GT_CODEC_KEY).toBe('');
    expect(() => productionSettingsFromEnv(env)).toThrow(
      /^GT_PAYLOAD_CODEC=aes-gcm needs the town's key, the same on every worker: no codec key: .* set GT_CODEC_KEY/,
    );
    expect(existsSync(join(home, 'codec.key')), 'no key may be generated').toBe(false);
    const key = randomBytes(32).toString('base64');
    expect(productionSettingsFromEnv({ ...env, GT_CODEC_KEY: key }).GT_WORKFLOW_BUNDLE).toBe(bundle);
  });

  it('wires the worker to the server and the town settings, and lets it drain before it is killed', () => {
    const worker = services.worker!;
    expect(worker.depends_on['temporal-create-namespace']?.condition).toBe('service_completed_successfully');
    const address = worker.environment.TEMPORAL_ADDRESS!;
    expect(address).toBe('temporal:7233');
    expect(services.temporal!.ports.some((p) => p.endsWith(':7233'))).toBe(true);
    expect(interpolate(worker.environment.TEMPORAL_NAMESPACE!)).toBe(
      interpolate(services['temporal-create-namespace']!.environment.GT_NAMESPACE!),
    );
    expect(
      worker.environment.GT_GATEWAY_SECRET,
      'every replica must share the gateway secret, so it is required',
    ).toMatch(/^\$\{GT_GATEWAY_SECRET:\?/);
    const seconds = (d: string) => Number(/^(\d+)s$/.exec(d)?.[1]);
    expect(seconds(worker.stop_grace_period!)).toBeGreaterThan(seconds(worker.environment.GT_SHUTDOWN_GRACE!));
    // Each replica is its own host: no shared GT_HOME volume, no fixed host ports (so --scale works).
    expect(worker.volumes).toEqual(['/var/lib/gastown']);
    expect(worker.ports).toEqual([]);
    expect(worker.environment.GT_HOST_ID).toBeUndefined();
  });

  it('creates exactly the search attributes the code defines', () => {
    const declared = services['temporal-create-namespace']!.environment.GT_SEARCH_ATTRIBUTES!.split(/\s+/).sort();
    expect(declared).toEqual(expectedSearchAttributes);
  });

  it('runs its namespace + search-attribute script against a real server, idempotently', async () => {
    const cli = await resolveTemporalCli();
    if (!cli.path) {
      console.warn('skipped: no local temporal CLI to run the compose script with (the SDK would download one)');
      return;
    }
    const svc = services['temporal-create-namespace']!;
    const namespace = `gt-compose-${process.pid}`;
    const env = {
      ...process.env,
      PATH: `${dirname(cli.path)}:${process.env.PATH}`,
      TEMPORAL_ADDRESS: temporalAddress(),
      GT_NAMESPACE: namespace,
      GT_SEARCH_ATTRIBUTES: svc.environment.GT_SEARCH_ATTRIBUTES,
    };
    const run = () =>
      new Promise<{ code: number; out: string }>((done) =>
        execFile('/bin/sh', ['-c', shellOf(svc.command)], { env, timeout: 120_000 }, (err, stdout, stderr) =>
          done({ code: err ? Number(err.code ?? 1) : 0, out: stdout + stderr }),
        ),
      );
    const first = await run();
    expect(first.code, first.out).toBe(0);
    expect(first.out).toContain(`namespace ${namespace} ready`);
    const second = await run();
    expect(second.code, second.out).toBe(0);

    const connection = await Connection.connect({ address: temporalAddress() });
    try {
      const { customAttributes } = await connection.operatorService.listSearchAttributes({ namespace });
      const { IndexedValueType } = proto.temporal.api.enums.v1;
      const typeName: Record<number, string> = {
        [IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD]: 'Keyword',
        [IndexedValueType.INDEXED_VALUE_TYPE_INT]: 'Int',
      };
      const registered = Object.entries(customAttributes ?? {})
        .filter(([name]) => name.startsWith('Gt'))
        .map(([name, type]) => `${name}=${typeName[type] ?? String(type)}`)
        .sort();
      expect(registered).toEqual(expectedSearchAttributes);
    } finally {
      await connection.close();
    }
  });
});

/** Relative imports of a TypeScript file, resolved to files; and its bare (package) imports. */
function importsOf(file: string): { local: string[]; packages: string[] } {
  const src = readFileSync(file, 'utf8');
  const specs = [
    ...src.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'";]*?from\s+'([^']+)'|import\(\s*'([^']+)'\s*\)/g),
  ].map((m) => m[1] ?? m[2]!);
  const local: string[] = [];
  const packages: string[] = [];
  for (const spec of specs) {
    if (spec.startsWith('.')) {
      const base = resolve(dirname(file), spec);
      const hit = [`${base}.ts`, join(base, 'index.ts'), base].find((p) => existsSync(p) && statSync(p).isFile());
      if (!hit) throw new Error(`${relative(repoRoot, file)} imports ${spec}, which does not resolve`);
      local.push(hit);
    } else if (!spec.startsWith('node:') && !builtinModules.includes(spec)) {
      packages.push(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!);
    }
  }
  return { local, packages };
}

/** What the worker image runs and builds from: the CLI, the worker, the bundlers, the workflows. */
const IMAGE_ENTRIES = [
  'worker/main.ts',
  'client/cli.ts',
  'client/agent-cli.ts',
  'scripts/build-workflow-bundle.ts',
  'scripts/build-cli.ts',
  'provisioning/cli-bundles.ts',
  'workflows/index.ts',
];

function closure(entries: string[]): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const queue = entries.map((e) => join(repoRoot, e));
  while (queue.length) {
    const file = queue.pop()!;
    if (files.has(file)) continue;
    files.add(file);
    const { local, packages: pk } = importsOf(file);
    pk.forEach((p) => packages.add(p));
    queue.push(...local.filter((f) => f.endsWith('.ts')));
  }
  return { files, packages };
}

/** Whether Docker leaves `path` (relative to the context root) out of the build context: Docker's own matching rules. */
const dockerignore = dockerignoreMatcher({ ignorecase: false }).add(read('.dockerignore').split('\n'));
const isIgnored = (path: string) => dockerignore.ignores(path);

describe('Dockerfile', () => {
  const lines = read('Dockerfile')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const instr = (name: string) =>
    lines.filter((l) => l.toUpperCase().startsWith(`${name} `)).map((l) => l.slice(name.length + 1).trim());

  it('builds from pinned base images', () => {
    // A base named by a build argument (NODE_IMAGE, which the offline proof overrides) is pinned by its default.
    const args = new Map(
      instr('ARG').map((a) => [a.split('=')[0]!, a.includes('=') ? a.slice(a.indexOf('=') + 1) : undefined]),
    );
    const bases = instr('FROM').map((f) =>
      f.split(/\s+/)[0]!.replace(/^\$\{(\w+)\}$/, (whole, name: string) => args.get(name) ?? whole),
    );
    expect(bases.length).toBeGreaterThan(0);
    for (const image of bases) expect(image, `${image} must be pinned`).toMatch(/:\d+\.\d+\.\d+[-\w.]*$/);
    expect(bases).toContain('node:20.19.5-bookworm-slim');
  });

  it('copies only sources that exist in the build context', () => {
    for (const copy of instr('COPY').filter((c) => !c.startsWith('--from'))) {
      const sources = copy.split(/\s+/).slice(0, -1);
      for (const source of sources) {
        if (source === '.') continue;
        expect(existsSync(join(repoRoot, source)), `COPY ${source} exists`).toBe(true);
        expect(isIgnored(source), `COPY ${source} is not excluded by .dockerignore`).toBe(false);
      }
    }
  });

  it('builds the workflow bundle where the worker looks for it, and runs the production entry', () => {
    expect(instr('RUN')).toContain('npm run build:bundle');
    expect(pkg.scripts['build:bundle']).toBe('tsx scripts/build-workflow-bundle.ts');
    expect(instr('RUN')).toContain('npm run build:cli');
    const workdir = instr('WORKDIR').at(-1)!;
    const bundleEnv = /GT_WORKFLOW_BUNDLE=(\S+)/.exec(instr('ENV').join(' '))?.[1];
    expect(bundleEnv).toBe(join(workdir, relative(repoRoot, defaultWorkflowBundlePath)));
    const cmd = z.array(z.string()).parse(JSON.parse(instr('CMD')[0]!));
    expect(cmd).toEqual(['node', '--import', 'tsx', 'worker/main.ts']);
    expect(instr('HEALTHCHECK')[0]).toMatch(/\/healthz/);
    expect(instr('STOPSIGNAL')).toEqual(['SIGTERM']);
  });

  it('ships every file the worker and the CLI import, and installs every package they use (npm ci --omit=dev)', () => {
    expect(instr('RUN')).toContain('npm ci --omit=dev');
    const { files, packages } = closure(IMAGE_ENTRIES);
    for (const file of files)
      expect(isIgnored(relative(repoRoot, file)), `${relative(repoRoot, file)} is in the image`).toBe(false);
    for (const p of packages)
      expect(pkg.dependencies, `${p} (imported at run time) must be a dependency, not a devDependency`).toHaveProperty([
        p,
      ]);
    expect(pkg.dependencies).toHaveProperty(['tsx']);
    expect(isIgnored('test')).toBe(true);
    expect(isIgnored('node_modules')).toBe(true);
  });
});

/**
 * What a developer's checkout may hold beside the sources (compose's .env, a GT_HOME made in the tree, keys, git
 * and registry credentials). An image layer keeps whatever `COPY . .` saw, and images get pushed: none may be sent.
 */
const LOCAL_SECRETS = [
  '.env',
  '.env.local',
  '.env.production',
  '.envrc',
  'deploy/.env',
  'deploy/prod/.env.staging',
  '.gastown/gateway.secret',
  'gt-home/gateway.secret',
  'gt-home/codec.key',
  'gt-home/git-credentials',
  'gt-home/temporal.db',
  'gt-home/temporal.db-wal',
  '.git-credentials',
  'home/.git-credentials',
  'tls/server.pem',
  'server.key',
  'certs/client.p12',
  'id_rsa',
  '.ssh/id_ed25519',
  '.netrc',
  '.npmrc',
  '.aws/credentials',
  '.docker/config.json',
];
/** What the image runs: every file the worker and the CLI import (and the build scripts). */
const imageSources = () => [...closure(IMAGE_ENTRIES).files].map((f) => relative(repoRoot, f));

const dockerWorks = (() => {
  try {
    execFileSync('docker', ['info'], { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
})();

describe('.dockerignore', () => {
  it("keeps every local secret out of the build context (Docker's matching rules), and no source the image needs", () => {
    for (const path of LOCAL_SECRETS) expect(isIgnored(path), `${path} would be sent to the Docker daemon`).toBe(true);
    for (const path of [...imageSources(), 'package.json', 'package-lock.json'])
      expect(isIgnored(path), `${path} is needed by the image`).toBe(false);
  });

  // Needs a Docker Engine (none is pulled: the image is FROM scratch); where there is none, the pattern check above stands.
  it.skipIf(!dockerWorks)(
    'a real build context of a checkout with secrets planted in it holds none of them (Docker Engine)',
    () => {
      const checkout = mkdtempSync(join(tmpdir(), 'gt-build-context-'));
      let image: string | undefined;
      let container: string | undefined;
      try {
        const tracked = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
          cwd: repoRoot,
          encoding: 'utf8',
        })
          .split('\0')
          .filter(Boolean);
        for (const file of tracked.filter((f) => existsSync(join(repoRoot, f)))) {
          mkdirSync(dirname(join(checkout, file)), { recursive: true });
          copyFileSync(join(repoRoot, file), join(checkout, file));
        }
        for (const secret of LOCAL_SECRETS) {
          mkdirSync(dirname(join(checkout, secret)), { recursive: true });
          writeFileSync(join(checkout, secret), 'do-not-ship\n');
        }
        // The context exactly as the daemon receives it: copied whole into an empty image, then listed.
        const docker = (args: string[], input?: string) =>
          execFileSync('docker', args, {
            cwd: checkout,
            input,
            encoding: 'utf8',
            env: { ...process.env, DOCKER_BUILDKIT: '0' },
            stdio: ['pipe', 'pipe', 'ignore'],
            maxBuffer: 64 * 1024 * 1024,
          }).trim();
        image = docker(['build', '-q', '-f', '-', '.'], 'FROM scratch\nCOPY . /ctx/\n');
        container = docker(['create', image, '/none']);
        const exported = execFileSync('docker', ['export', container], { maxBuffer: 256 * 1024 * 1024 });
        const listing = new Set(
          execFileSync('tar', ['-t'], { input: exported, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
            .split('\n')
            .filter((l) => l.startsWith('ctx/'))
            .map((l) => l.slice(4).replace(/\/$/, '')),
        );
        for (const secret of LOCAL_SECRETS)
          expect(listing.has(secret), `${secret} reached the build context`).toBe(false);
        for (const source of [...imageSources(), 'package.json', 'package-lock.json'])
          expect(listing.has(source), `${source} is missing from the build context`).toBe(true);
      } finally {
        if (container) execFileSync('docker', ['rm', '-f', container], { stdio: 'ignore' });
        if (image) execFileSync('docker', ['rmi', '-f', image], { stdio: 'ignore' });
        rmSync(checkout, { recursive: true, force: true });
      }
    },
  );
});
