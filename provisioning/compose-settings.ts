/**
 * The production topology's settings, read from docker-compose.yml itself, so that the compose stack and the
 * harness that runs the same topology here without images (provisioning/prod-stack.ts) cannot drift: the server's
 * environment (the same variables feed the same config template, `config/docker.yaml` of the server release), its
 * dynamic config file, the schema script of `temporal-admin-tools`, the namespace and search-attribute script of
 * `temporal-create-namespace`, and the Web UI's environment.
 *
 * What the harness changes is only what a container network decides: addresses (loopback instead of service
 * names), ports (free ones instead of fixed ones in a container of its own), and paths (the cache and state dirs
 * instead of the image's). `hostOverrides` below lists every such key; nothing else may differ.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { z } from 'zod';

export const repoRoot = fileURLToPath(new URL('..', import.meta.url));
export const COMPOSE_FILE = join(repoRoot, 'docker-compose.yml');

const Service = z.object({
  image: z.string().optional(),
  environment: z.record(z.string(), z.string()).default({}),
  command: z.union([z.string(), z.array(z.string())]).optional(),
  configs: z.array(z.object({ source: z.string(), target: z.string() })).default([]),
});
const Compose = z.object({
  services: z.record(z.string(), Service),
  configs: z.record(z.string(), z.object({ file: z.string() }).or(z.object({ content: z.string() }))).default({}),
});
type Service = z.infer<typeof Service>;

/**
 * Compose's interpolation of `${VAR}`, `${VAR:-default}`, `${VAR-default}` and `${VAR:?message}` from `env`, the way
 * `docker compose` reads the user's shell; `$$` is a literal `$` (left for the shell of a command).
 */
export function interpolate(value: string, env: NodeJS.ProcessEnv): string {
  return value.replace(
    /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?)([-?])([^}]*))?\}/g,
    (whole, name: string | undefined, colon: string, op: string, arg: string) => {
      if (whole === '$$') return '$$';
      const v = env[name!];
      const unset = v === undefined || (colon === ':' && v === '');
      if (op === '-') return unset ? arg : v;
      if (op === '?') {
        if (unset) throw new Error(`docker-compose.yml needs ${name}: ${arg}`);
        return v;
      }
      return v ?? '';
    },
  );
}

/** A compose command as the shell inside the container sees it (`$$` → `$`). */
const shellOf = (command: Service['command']) =>
  (Array.isArray(command) ? command.join(' ') : (command ?? '')).replace(/\$\$/g, '$');

export interface ComposeSettings {
  /** `temporalio/server:<tag>`'s tag, e.g. 1.29.1. */
  serverImageVersion: string;
  /** The `temporal` service's environment, interpolated. */
  serverEnv: Record<string, string>;
  /** The dynamic config file the `temporal` service mounts (absolute path in this checkout). */
  dynamicConfigFile: string;
  /** `temporal-admin-tools`: the schema script and its environment. */
  schema: { script: string; env: Record<string, string> };
  /** `temporal-create-namespace`: the namespace + search-attribute script and its environment. */
  namespace: { script: string; env: Record<string, string> };
  /** `temporal-ui`'s environment. */
  uiEnv: Record<string, string>;
  /** The `worker` service's environment (each replica is one host). */
  workerEnv: Record<string, string>;
}

export function readComposeSettings(env: NodeJS.ProcessEnv = process.env, file = COMPOSE_FILE): ComposeSettings {
  const compose = Compose.parse(parse(readFileSync(file, 'utf8')));
  const service = (name: string) => {
    const s = compose.services[name];
    if (!s) throw new Error(`docker-compose.yml has no ${name} service`);
    return s;
  };
  const envOf = (s: Service) =>
    Object.fromEntries(Object.entries(s.environment).map(([k, v]) => [k, interpolate(v, env)]));
  const temporal = service('temporal');
  const serverEnv = envOf(temporal);
  const mountPath = serverEnv.DYNAMIC_CONFIG_FILE_PATH;
  const mount = temporal.configs.find((c) => mountPath && c.target === `/etc/temporal/${mountPath}`);
  const source = mount && compose.configs[mount.source];
  if (!source || !('file' in source))
    throw new Error(
      'docker-compose.yml: the temporal service must mount its DYNAMIC_CONFIG_FILE_PATH from a config file',
    );
  const version = /^temporalio\/server:(.+)$/.exec(temporal.image ?? '')?.[1];
  if (!version)
    throw new Error(`docker-compose.yml: the temporal service runs ${temporal.image}, not temporalio/server`);
  // The worker's secret is required by compose; the harness supplies its own, so only a placeholder is read here.
  const workerEnv = envOf({
    ...service('worker'),
    environment: Object.fromEntries(
      Object.entries(service('worker').environment).filter(([k]) => k !== 'GT_GATEWAY_SECRET'),
    ),
  });
  return {
    serverImageVersion: version,
    serverEnv,
    dynamicConfigFile: join(repoRoot, source.file),
    schema: { script: shellOf(service('temporal-admin-tools').command), env: envOf(service('temporal-admin-tools')) },
    namespace: {
      script: shellOf(service('temporal-create-namespace').command),
      env: envOf(service('temporal-create-namespace')),
    },
    uiEnv: envOf(service('temporal-ui')),
    workerEnv,
  };
}

/**
 * The keys the harness sets differently from compose, and only these: where things are (addresses, ports, paths),
 * and the server's LOG_LEVEL (warn unless compose sets one: its log is a file here, not a container's stream).
 * `test/prod-stack.test.ts` checks that every other key of the server's environment equals compose's.
 */
export const HOST_OVERRIDES = {
  server: [
    'POSTGRES_SEEDS',
    'DB_PORT',
    'POSTGRES_PORT',
    'BIND_ON_IP',
    'DYNAMIC_CONFIG_FILE_PATH',
    'FRONTEND_GRPC_PORT',
    'FRONTEND_HTTP_PORT',
    'FRONTEND_MEMBERSHIP_PORT',
    'HISTORY_GRPC_PORT',
    'HISTORY_MEMBERSHIP_PORT',
    'MATCHING_GRPC_PORT',
    'MATCHING_MEMBERSHIP_PORT',
    'WORKER_GRPC_PORT',
    'WORKER_MEMBERSHIP_PORT',
    'LOG_LEVEL',
  ],
  schema: ['POSTGRES_SEEDS', 'DB_PORT', 'SCHEMA_DIR'],
  namespace: ['TEMPORAL_ADDRESS'],
  ui: ['TEMPORAL_ADDRESS', 'TEMPORAL_UI_PORT'],
} as const;
