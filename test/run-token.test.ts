/** Per-run tokens: HMAC-signed claims that prove which run speaks; forged, tampered, expired or malformed ones fail. */
import { chmodSync, mkdirSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { mintRunToken, verifyRunToken } from '../agents/run-token';
import { ensureHome, gatewaySecret } from '../host/home';

const secret = Buffer.from('s'.repeat(32));
const claims = { beadId: 'b1', runId: 'b1/r1/a1', role: 'polecat' as const, workflowId: 'bead:b1', exp: 2_000 };

describe('run tokens', () => {
  it('verify with the secret that minted them, until they expire', () => {
    const token = mintRunToken(secret, claims);
    expect(token).toMatch(/^gtr1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    expect(verifyRunToken(secret, token, 1_999)).toEqual({ ok: true, claims });
    expect(verifyRunToken(secret, token, 2_000)).toEqual({ ok: false, reason: 'token expired' });
  });

  it('refuse another secret, a tampered body or signature, and malformed tokens', () => {
    const token = mintRunToken(secret, claims);
    const [, body, sig] = token.split('.') as [string, string, string];
    expect(verifyRunToken(Buffer.from('other'), token, 0)).toEqual({ ok: false, reason: 'bad token signature' });
    const otherBody = Buffer.from(JSON.stringify({ ...claims, beadId: 'b2', workflowId: 'bead:b2' })).toString(
      'base64url',
    );
    expect(verifyRunToken(secret, `gtr1.${otherBody}.${sig}`, 0)).toEqual({ ok: false, reason: 'bad token signature' });
    expect(verifyRunToken(secret, `gtr1.${body}.${sig.slice(0, -2)}`, 0)).toEqual({
      ok: false,
      reason: 'bad token signature',
    });
    expect(verifyRunToken(secret, 'Bearer nonsense', 0)).toEqual({ ok: false, reason: 'malformed token' });
    expect(verifyRunToken(secret, `gtr2.${body}.${sig}`, 0)).toEqual({ ok: false, reason: 'malformed token' });
  });

  it('cannot be minted for a run id that is not one', () => {
    expect(() => mintRunToken(secret, { ...claims, runId: 'b1' })).toThrow(/run id must look like/);
  });
});

describe('the secret behind them', () => {
  const saved = process.env.GT_GATEWAY_SECRET;
  afterEach(() => {
    if (saved === undefined) delete process.env.GT_GATEWAY_SECRET;
    else process.env.GT_GATEWAY_SECRET = saved;
  });

  it('is refused when shorter than 32 bytes, saying how to make one', () => {
    process.env.GT_GATEWAY_SECRET = 'short-secret';
    expect(() => gatewaySecret(mkdtempSync(join(tmpdir(), 'gt-secret-')))).toThrow(
      /GT_GATEWAY_SECRET has 12 bytes; it must have at least 32 \(e\.g\. `openssl rand -hex 32`\)/,
    );
    process.env.GT_GATEWAY_SECRET = 'x'.repeat(32);
    expect(gatewaySecret(mkdtempSync(join(tmpdir(), 'gt-secret-'))).length).toBe(32);
  });

  it('lives in a GT_HOME made owner-only, however it was created before', () => {
    delete process.env.GT_GATEWAY_SECRET;
    const home = join(mkdtempSync(join(tmpdir(), 'gt-home-perm-')), 'home');
    mkdirSync(home, { mode: 0o755 });
    chmodSync(home, 0o755);
    ensureHome(home);
    expect(statSync(home).mode & 0o777).toBe(0o700);
    gatewaySecret(home);
    expect(statSync(join(home, 'gateway.secret')).mode & 0o777).toBe(0o600);
  });
});
