/**
 * The payload-encryption setting shared by every process of a town (worker, CLI, gateway, MCP server):
 * `GT_PAYLOAD_CODEC=aes-gcm` turns it on, `none` (default) leaves payloads readable JSON. Worker and clients must
 * agree — a worker without the key cannot read encrypted inputs — so all of them read it from the same place.
 */
import type { DataConverter, Payload, PayloadCodec } from '@temporalio/common';
import { z } from 'zod';
import { gtHome } from '../host/home';
import { parseOr } from '../domain/validation';
import { AesGcmCodec, isEncrypted } from './aes-gcm-codec';
import { loadKeyring } from './keys';

export const PayloadCodecSetting = z.enum(['none', 'aes-gcm'], {
  error: (i) => `GT_PAYLOAD_CODEC must be 'none' or 'aes-gcm', got ${JSON.stringify(i.input)}`,
});
export type PayloadCodecSetting = z.infer<typeof PayloadCodecSetting>;

export function payloadCodecSetting(env: NodeJS.ProcessEnv = process.env): PayloadCodecSetting {
  return parseOr(
    PayloadCodecSetting,
    env.GT_PAYLOAD_CODEC?.trim() || 'none',
    (problem) => new Error(problem),
    (error) => error.issues[0]!.message,
  );
}

export const MISSING_KEY_MESSAGE =
  "this town's payloads are encrypted: set GT_PAYLOAD_CODEC=aes-gcm and the town's key (GT_CODEC_KEY or GT_CODEC_KEY_FILE)";

/**
 * With encryption off, an encrypted payload would surface as the converter's "Unknown encoding"; this codec turns
 * it into a message that says what to set. Everything else passes through untouched.
 */
export class EncryptedPayloadGuard implements PayloadCodec {
  encode(payloads: Payload[]): Promise<Payload[]> {
    return Promise.resolve(payloads);
  }

  decode(payloads: Payload[]): Promise<Payload[]> {
    return payloads.some(isEncrypted) ? Promise.reject(new Error(MISSING_KEY_MESSAGE)) : Promise.resolve(payloads);
  }
}

/**
 * For processes that join a town rather than found it (`gt worker`, the production worker): with encryption on, the
 * town's key must be given (GT_CODEC_KEY, or a key file that exists). A worker that generated a key of its own would
 * write payloads no other replica could read, so it refuses to start instead.
 */
export function assertTownKeyGiven(env: NodeJS.ProcessEnv = process.env, home = gtHome()): void {
  if (payloadCodecSetting(env) === 'none') return;
  try {
    loadKeyring({ home, env, create: false });
  } catch (err) {
    throw new Error(
      `GT_PAYLOAD_CODEC=aes-gcm needs the town's key, the same on every worker: ${(err as Error).message}`,
    );
  }
}

/** The codecs this process must use. With encryption on, a missing key file is created (one host's `gt up`). */
export function payloadCodecsFromEnv(env: NodeJS.ProcessEnv = process.env, home = gtHome()): PayloadCodec[] {
  if (payloadCodecSetting(env) === 'none') return [new EncryptedPayloadGuard()];
  return [new AesGcmCodec(loadKeyring({ home, env, create: true }))];
}

export function dataConverterFromEnv(env: NodeJS.ProcessEnv = process.env, home = gtHome()): DataConverter {
  return { payloadCodecs: payloadCodecsFromEnv(env, home) };
}
