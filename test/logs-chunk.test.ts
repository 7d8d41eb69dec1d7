/**
 * The bounded, offset-based reads behind `gt logs` (activities/logs.ts): tail and offset reads, the byte cap, UTF-8
 * characters never cut in two, terminal control characters removed, a missing file an empty answer.
 */
import { appendFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readLogChunk, wholeCharacters } from '../activities/logs';
import { ReadRunLogRequest } from '../domain/logs';

const file = () => join(mkdtempSync(join(tmpdir(), 'gt-logchunk-')), 'output.log');

describe('readLogChunk', () => {
  it('reads from an offset only the bytes past it, at most maxBytes, and says where the next read starts', () => {
    const f = file();
    writeFileSync(f, 'abcdefghij');
    expect(readLogChunk(f, 0, 4)).toEqual({ exists: true, offset: 0, nextOffset: 4, size: 10, text: 'abcd' });
    expect(readLogChunk(f, 4, 100)).toEqual({ exists: true, offset: 4, nextOffset: 10, size: 10, text: 'efghij' });
    expect(readLogChunk(f, 10, 100)).toMatchObject({ nextOffset: 10, text: '' });
    appendFileSync(f, 'klm');
    expect(readLogChunk(f, 10, 100)).toMatchObject({ offset: 10, nextOffset: 13, text: 'klm' });
  });

  it('without an offset, answers the last maxBytes', () => {
    const f = file();
    writeFileSync(f, 'x'.repeat(1000) + 'tail');
    expect(readLogChunk(f, undefined, 4)).toEqual({
      exists: true,
      offset: 1000,
      nextOffset: 1004,
      size: 1004,
      text: 'tail',
    });
  });

  it('never cuts a UTF-8 character: an incomplete one is left for the next read, a cut lead is skipped', () => {
    const f = file();
    writeFileSync(f, 'café!'); // é is 2 bytes: c a f 0xC3 0xA9 !
    expect(readLogChunk(f, 0, 4)).toMatchObject({ nextOffset: 3, text: 'caf' });
    expect(readLogChunk(f, 3, 4)).toMatchObject({ offset: 3, nextOffset: 6, text: 'é!' });
    // A tail starting inside é skips its continuation byte.
    expect(readLogChunk(f, undefined, 2)).toMatchObject({ offset: 5, text: '!' });
    expect(wholeCharacters(Buffer.from([0xe2, 0x82]))).toEqual({ start: 0, end: 0 });
    expect(wholeCharacters(Buffer.from('€', 'utf8'))).toEqual({ start: 0, end: 3 });
  });

  it('removes terminal control characters (an agent writes what it likes), keeping newlines and tabs', () => {
    const f = file();
    writeFileSync(f, 'a\x1b[31mred\x1b[0m\tb\x07\r\n\x1b]0;title\x07c\n');
    const { text } = readLogChunk(f, 0, 1000);
    expect(text).toBe('a[31mred[0m\tb\n]0;titlec\n');
    // eslint-disable-next-line no-control-regex
    expect(text).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f]/);
  });

  it('answers a missing file as empty, not as an error', () => {
    expect(readLogChunk(join(tmpdir(), 'no-such-dir-gt', 'output.log'), 5, 10)).toEqual({
      exists: false,
      offset: 5,
      nextOffset: 5,
      size: 0,
      text: '',
    });
  });

  it('refuses a read that is not a run id or asks for more than the cap (so no path can come from the input)', () => {
    expect(ReadRunLogRequest.safeParse({ runId: '../../etc/passwd', host: 'h' }).success).toBe(false);
    expect(ReadRunLogRequest.safeParse({ runId: 'b1/r1/a1', host: '../h' }).success).toBe(false);
    expect(ReadRunLogRequest.safeParse({ runId: 'b1/r1/a1', host: 'h', maxBytes: 10 * 1024 * 1024 }).success).toBe(
      false,
    );
    expect(ReadRunLogRequest.safeParse({ runId: 'b1/r1/review2', host: 'h-1.x' }).success).toBe(true);
  });
});
