/**
 * Payload encryption keys. They come from the environment or a file and never travel through Temporal: payloads
 * carry only a key id (a hash prefix), so history says which key to use without revealing it.
 *
 *   GT_CODEC_KEY       base64 32-byte AES key(s), comma-separated; the first encrypts, all decrypt (rotation)
 *   GT_CODEC_KEY_FILE  file with such keys, one per line (default: $GT_HOME/codec.key, created on first use)
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { parseOr } from '../domain/validation';

export interface CodecKey {
  id: string;
  key: Buffer;
}

export interface CodecKeyring {
  /** The key new payloads are encrypted with. */
  active: CodecKey;
  /** Every key that may decrypt, by id. */
  byId: Map<string, CodecKey>;
  /** Where the keys came from (for messages; never the keys themselves). */
  source: string;
}

const KEY_BYTES = 32;

const Base64Key = z
  .string()
  .trim()
  .regex(/^[A-Za-z0-9+/_-]+={0,2}$/, 'a codec key must be base64')
  .transform((s) => Buffer.from(s, 'base64'))
  .refine(
    (b) => b.length === KEY_BYTES,
    `a codec key must decode to ${KEY_BYTES} bytes (generate one with \`openssl rand -base64 32\`)`,
  );

const KeyList = z.array(Base64Key).min(1, 'no codec key given');

export const keyId = (key: Buffer) => createHash('sha256').update(key).digest('hex').slice(0, 16);

export const defaultKeyFile = (home: string) => join(home, 'codec.key');

export function parseKeys(text: string, separator: RegExp, source: string): CodecKeyring {
  const list = parseOr(
    KeyList,
    text
      .split(separator)
      .map((s) => s.trim())
      .filter(Boolean),
    (problem) => new Error(`invalid codec key in ${source}: ${problem}`),
  );
  const keys = list.map((key) => ({ id: keyId(key), key }));
  return { active: keys[0]!, byId: new Map(keys.map((k) => [k.id, k])), source };
}

/** Reads the keyring; with `create`, a missing key file is generated (owner-only), as one host's `gt up` needs. */
export function loadKeyring(options: { home: string; env?: NodeJS.ProcessEnv; create?: boolean }): CodecKeyring {
  const env = options.env ?? process.env;
  if (env.GT_CODEC_KEY) return parseKeys(env.GT_CODEC_KEY, /,/, 'GT_CODEC_KEY');
  const file = env.GT_CODEC_KEY_FILE ?? defaultKeyFile(options.home);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    if (!options.create)
      throw new Error(`no codec key: ${file} does not exist; set GT_CODEC_KEY or GT_CODEC_KEY_FILE to the town's key`);
    mkdirSync(dirname(file), { recursive: true });
    try {
      writeFileSync(file, `${randomBytes(KEY_BYTES).toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
    } catch (raced) {
      // Another process on this host created it first: use theirs.
      if ((raced as NodeJS.ErrnoException).code !== 'EEXIST') throw raced;
    }
    text = readFileSync(file, 'utf8');
  }
  return parseKeys(text, /\r?\n/, file);
}
