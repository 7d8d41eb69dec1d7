/**
 * Per-run agent tokens: an HMAC-signed claim `{beadId, runId, role, exp}`. The token proves *which run* is
 * speaking; whether that run is still current is decided by the workflow (update validator), so a token of an
 * old run is refused even before it expires. Tokens are minted on the worker host and never enter a payload.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { RunId } from '../domain/ids';

export const RunClaims = z.object({
  beadId: z.string(),
  runId: RunId,
  role: z.enum(['polecat', 'reviewer']),
  /** Workflow id the run belongs to (bead or merge request). */
  workflowId: z.string(),
  exp: z.number().int(),
});
export type RunClaims = z.infer<typeof RunClaims>;

const b64 = (b: Buffer | string) => Buffer.from(b).toString('base64url');
const sign = (secret: Buffer, body: string) => createHmac('sha256', secret).update(body).digest();

export function mintRunToken(secret: Buffer, claims: RunClaims): string {
  const body = b64(JSON.stringify(RunClaims.parse(claims)));
  return `gtr1.${body}.${b64(sign(secret, body))}`;
}

export type TokenCheck = { ok: true; claims: RunClaims } | { ok: false; reason: string };

export function verifyRunToken(secret: Buffer, token: string, nowMs: number): TokenCheck {
  const parts = token.split('.');
  if (parts.length !== 3 || parts[0] !== 'gtr1') return { ok: false, reason: 'malformed token' };
  const [, body, sig] = parts as [string, string, string];
  const expected = sign(secret, body);
  const given = Buffer.from(sig, 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected))
    return { ok: false, reason: 'bad token signature' };
  let claims: RunClaims;
  try {
    claims = RunClaims.parse(JSON.parse(Buffer.from(body, 'base64url').toString('utf8')));
  } catch {
    return { ok: false, reason: 'malformed token claims' };
  }
  if (claims.exp <= nowMs) return { ok: false, reason: 'token expired' };
  return { ok: true, claims };
}
