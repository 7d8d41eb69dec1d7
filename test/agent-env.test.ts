/**
 * What an agent inherits from its worker, by allow-list: model keys yes; Temporal, codec, gateway, forge, cloud, npm
 * credentials and the ssh agent never, nor its own token (a file, GT_RUN_TOKEN_FILE, owner-only).
 */
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRepo } from './helpers/repo';
import { agentScript, startTestTown, type TestTown } from './helpers/town';

const WORKER_SECRETS = {
  TEMPORAL_API_KEY: 'temporal-api-key-value',
  GT_GATEWAY_SECRET: 'gateway-secret-value',
  GT_CODEC_KEY: 'codec-key-value',
  GT_CODEC_SERVER_TOKEN: 'codec-token-value',
  GITHUB_TOKEN: 'github-token-value',
  AWS_SECRET_ACCESS_KEY: 'aws-secret-value',
  NPM_TOKEN: 'npm-token-value',
  SSH_AUTH_SOCK: '/tmp/ssh-agent-socket-value',
  SOME_UNDECLARED_VARIABLE: 'undeclared-value',
};
const saved = { ...process.env };
let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
  // Set after the worker connected: the agent-run activities read the host environment when they launch.
  Object.assign(process.env, WORKER_SECRETS, { ANTHROPIC_API_KEY: 'model-key-value' });
});
afterAll(async () => {
  process.env = saved;
  await t?.stop();
});

describe('agent environment', () => {
  it('passes model keys through and withholds every worker credential', async () => {
    const repo = await createRepo();
    const testDir = mkdtempSync(join(tmpdir(), 'gt-env-'));
    await t.addRig({ name: 'env-rig', repo: repo.origin, agent: agentScript('run-env'), env: { TEST_DIR: testDir } });
    const { handle } = await t.town.sling('env-rig', { id: 'b-env', title: 'Show me your environment' });
    expect((await handle.result()).status).toBe('closed');
    const env = readFileSync(join(testDir, 'env'), 'utf8');
    expect(env).toContain('ANTHROPIC_API_KEY=model-key-value');
    expect(env).toContain('GT_RUN_ID=b-env/r1/a1');
    for (const [name, value] of Object.entries(WORKER_SECRETS)) {
      expect(env, name).not.toContain(value);
    }
    expect(env).not.toMatch(/^GT_RUN_TOKEN=/m);
    const tokenFile = /^GT_RUN_TOKEN_FILE=(.+)$/m.exec(env)?.[1];
    expect(tokenFile && statSync(tokenFile).mode & 0o777).toBe(0o600);
    expect(readFileSync(tokenFile!, 'utf8')).toMatch(/^gtr1\./);
  });
});
