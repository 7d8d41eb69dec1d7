/**
 * AES-256-GCM payload codec: every payload (bead texts, feedback, agent summaries, activity inputs/results) is
 * stored in Temporal as ciphertext. A payload is serialized whole (metadata + data) before encryption, so even its
 * original encoding is hidden; the wire payload says only `binary/encrypted` and which key id sealed it.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { Payload, PayloadCodec } from '@temporalio/common';
import proto from '@temporalio/proto';
import type { CodecKeyring } from './keys';

// The package is CommonJS generated code: its namespaces are reachable through the default export only.
const { Payload: PayloadProto } = proto.temporal.api.common.v1;

export const ENCRYPTED_ENCODING = 'binary/encrypted';
export const KEY_ID_METADATA = 'encryption-key-id';

const IV_BYTES = 12;
const TAG_BYTES = 16;
const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

export class AesGcmCodec implements PayloadCodec {
  constructor(private readonly keyring: CodecKeyring) {}

  // Through .then so a failure (wrong key, tampering) is a rejection, as callers of a codec expect.
  encode(payloads: Payload[]): Promise<Payload[]> {
    return Promise.resolve().then(() => payloads.map((p) => this.encrypt(p)));
  }

  decode(payloads: Payload[]): Promise<Payload[]> {
    return Promise.resolve().then(() => payloads.map((p) => (isEncrypted(p) ? this.decrypt(p) : p)));
  }

  private encrypt(payload: Payload): Payload {
    const { id, key } = this.keyring.active;
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    const plain = PayloadProto.encode(payload).finish();
    const sealed = Buffer.concat([iv, cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
    return {
      metadata: { encoding: utf8.encode(ENCRYPTED_ENCODING), [KEY_ID_METADATA]: utf8.encode(id) },
      data: sealed,
    };
  }

  private decrypt(payload: Payload): Payload {
    const id = fromUtf8.decode(payload.metadata?.[KEY_ID_METADATA] ?? new Uint8Array());
    const entry = this.keyring.byId.get(id);
    if (!entry)
      throw new Error(
        `payload was encrypted with codec key ${id || '(none)'}, which is not among the keys from ${this.keyring.source}`,
      );
    const data = Buffer.from(payload.data ?? new Uint8Array());
    if (data.length < IV_BYTES + TAG_BYTES) throw new Error('encrypted payload is truncated');
    const decipher = createDecipheriv('aes-256-gcm', entry.key, data.subarray(0, IV_BYTES));
    decipher.setAuthTag(data.subarray(data.length - TAG_BYTES));
    const plain = Buffer.concat([decipher.update(data.subarray(IV_BYTES, data.length - TAG_BYTES)), decipher.final()]);
    return PayloadProto.decode(plain);
  }
}

export function isEncrypted(payload: Payload): boolean {
  const encoding = payload.metadata?.encoding;
  return !!encoding && fromUtf8.decode(encoding) === ENCRYPTED_ENCODING;
}
