/**
 * The payload-encryption setting shared by every process of a town (worker, CLI, gateway, MCP server):
 * `GT_PAYLOAD_CODEC=aes-gcm` turns it on, `none` (default) leaves payloads readable JSON. Worker and clients must
 * agree — a worker without the key cannot read encrypted inputs — so all of them read it from the same place.
 */
import type { DataConverter, PayloadCodec } from '@temporalio/common';
import { z } from 'zod';
import { gtHome } from '../host/home';
import { AesGcmCodec } from './aes-gcm-codec';
import { loadKeyring } from './keys';

export const PayloadCodecSetting = z.enum(['none', 'aes-gcm'], { error: (i) => `GT_PAYLOAD_CODEC must be 'none' or 'aes-gcm', got ${JSON.stringify(i.input)}` });
export type PayloadCodecSetting = z.infer<typeof PayloadCodecSetting>;

export function payloadCodecSetting(env: NodeJS.ProcessEnv = process.env): PayloadCodecSetting {
  const parsed = PayloadCodecSetting.safeParse(env.GT_PAYLOAD_CODEC?.trim() || 'none');
  if (!parsed.success) throw new Error(parsed.error.issues[0]!.message);
  return parsed.data;
}

/** The codecs this process must use; empty when encryption is off. A missing key file is created (single host). */
export function payloadCodecsFromEnv(env: NodeJS.ProcessEnv = process.env, home = gtHome()): PayloadCodec[] {
  if (payloadCodecSetting(env) === 'none') return [];
  return [new AesGcmCodec(loadKeyring({ home, env, create: true }))];
}

export function dataConverterFromEnv(env: NodeJS.ProcessEnv = process.env, home = gtHome()): DataConverter {
  return { payloadCodecs: payloadCodecsFromEnv(env, home) };
}
