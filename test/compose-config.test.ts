/**
 * docker-compose.yml through compose's own loader (compose-spec/compose-go, what `docker compose config` runs;
 * provisioning/compose-config.ts): the file is valid compose, its required secret is a one-line refusal, and the
 * settings the production harness reads from it (provisioning/compose-settings.ts: the services' environments and
 * the two one-shot scripts) are exactly what compose resolves — so the harness's own reading of the file, its
 * interpolation included, cannot drift from compose's.
 *
 * Needs Go to build the loader once (seconds); without Go those tests skip and say why. The image versions compose
 * pulls are checked against the harness's own (plain YAML, no Go).
 */
import { readFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { z } from 'zod';
import { composeConfig, resolveComposeConfig } from '../provisioning/compose-config';
import { COMPOSE_FILE, readComposeSettings } from '../provisioning/compose-settings';
import { resolvePostgres } from '../provisioning/postgres';
import { TEMPORAL_SERVER_VERSION, UI_SERVER_VERSION } from '../provisioning/temporal-server';

const tool = await resolveComposeConfig((m) => console.error(`[compose-config] ${m}`));
if (!tool.available) console.warn(`test/compose-config.test.ts skipped: ${tool.reason}`);

const postgres = resolvePostgres();

const Resolved = z.object({
  name: z.string(),
  services: z.record(
    z.string(),
    z.object({
      environment: z.record(z.string(), z.string().nullable()).default({}),
      command: z.array(z.string()).nullable().optional(),
      ports: z.array(z.object({ host_ip: z.string().optional(), published: z.string() })).default([]),
    }),
  ),
});

// Values a user could set, with characters that interpolation must carry as they are.
const ENV = {
  GT_GATEWAY_SECRET: 'a'.repeat(64),
  POSTGRES_PASSWORD: 'p@ss word$1',
  TEMPORAL_NAMESPACE: 'town-7',
  GT_TASK_QUEUE: 'queue-7',
};

describe.skipIf(!tool.available)('docker-compose.yml through compose-go (what `docker compose config` runs)', () => {
  const path = tool.available ? tool.path : '';

  it('is valid compose: every service resolves, the codec server only with its profile, published on loopback', async () => {
    const plain = await composeConfig(path, ENV);
    if (!plain.ok) throw new Error(plain.error);
    const project = Resolved.parse(parse(plain.yaml));
    expect(project.name).toBe('gastown');
    expect(Object.keys(project.services).sort()).toEqual([
      'postgresql',
      'temporal',
      'temporal-admin-tools',
      'temporal-create-namespace',
      'temporal-ui',
      'worker',
    ]);
    for (const [name, service] of Object.entries(project.services))
      for (const port of service.ports) expect(port.host_ip, `${name} publishes ${port.published}`).toBe('127.0.0.1');
    const withCodec = await composeConfig(path, ENV, ['encryption']);
    if (!withCodec.ok) throw new Error(withCodec.error);
    expect(Object.keys(Resolved.parse(parse(withCodec.yaml)).services)).toContain('codec-server');
  });

  it('refuses to resolve without the gateway secret, in one line that says how to make one', async () => {
    const { GT_GATEWAY_SECRET: _, ...withoutSecret } = ENV;
    const result = await composeConfig(path, withoutSecret);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.error.split('\n')).toHaveLength(1);
    expect(result.error).toMatch(/GT_GATEWAY_SECRET.*openssl rand -hex 32/);
  });

  it("gives the harness compose's own environments and scripts (compose-settings.ts reads what compose resolves)", async () => {
    const result = await composeConfig(path, ENV);
    if (!result.ok) throw new Error(result.error);
    const services = Resolved.parse(parse(result.yaml)).services;
    const envOf = (name: string) =>
      Object.fromEntries(Object.entries(services[name]!.environment).map(([k, v]) => [k, v ?? '']));
    const ours = readComposeSettings(ENV);
    expect(ours.serverEnv).toEqual(envOf('temporal'));
    expect(ours.schema.env).toEqual(envOf('temporal-admin-tools'));
    expect(ours.namespace.env).toEqual(envOf('temporal-create-namespace'));
    expect(ours.uiEnv).toEqual(envOf('temporal-ui'));
    // The worker's secret is the one key the harness does not take from compose (it makes its own).
    const { GT_GATEWAY_SECRET: secret, ...worker } = envOf('worker');
    expect(secret).toBe(ENV.GT_GATEWAY_SECRET);
    expect(ours.workerEnv).toEqual(worker);
    expect(ours.serverEnv.POSTGRES_PWD).toBe(ENV.POSTGRES_PASSWORD);
    // The scripts the harness runs with `sh` are the commands the containers' shells get ($$ unescaped).
    expect(ours.schema.script).toBe(services['temporal-admin-tools']!.command!.join(' '));
    expect(ours.namespace.script).toBe(services['temporal-create-namespace']!.command!.join(' '));
  });
});

// Read as plain YAML (no Go needed): the versions compose pulls are the ones the harness builds and runs.
describe("docker-compose.yml's images and the production harness", () => {
  const images = Object.fromEntries(
    Object.entries(
      z
        .object({ services: z.record(z.string(), z.object({ image: z.string().optional() })) })
        .parse(parse(readFileSync(COMPOSE_FILE, 'utf8'))).services,
    ).map(([name, s]) => [name, s.image ?? '']),
  );
  const tag = (service: string) => images[service]!.split(':')[1] ?? '';

  it('pins the Temporal server, admin tools and Web UI releases the harness builds from the Go module proxy', () => {
    expect(tag('temporal')).toBe(TEMPORAL_SERVER_VERSION.replace(/^v/, ''));
    expect(tag('temporal-admin-tools')).toMatch(new RegExp(`^${TEMPORAL_SERVER_VERSION.replace(/^v/, '')}-`));
    expect(tag('temporal-ui')).toBe(UI_SERVER_VERSION.replace(/^v/, ''));
  });

  it.skipIf(!postgres.available)('pins the PostgreSQL major the harness runs', () => {
    if (!postgres.available) return;
    // resolvePostgres() picks Debian's newest, /usr/lib/postgresql/<major>/bin.
    const harnessMajor = postgres.binDir.match(/postgresql\/(\d+)\//)?.[1] ?? basename(dirname(postgres.binDir));
    expect(tag('postgresql').split('.')[0]).toBe(harnessMajor);
  });
});
