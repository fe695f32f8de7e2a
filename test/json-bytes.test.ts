/** JsonBytes: numbers, chunking, and text larger than a chunk's slack. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encoded, JsonBytes } from '../src/json-bytes';

const text = (chunks: Array<Buffer | undefined>): string => Buffer.concat(chunks.filter((c): c is Buffer => c !== undefined)).toString('utf8');

test('uint writes what String() does, 0 to 2^53 - 1; uintOrNull and bool write JSON literals', () => {
  const numbers = [0, 1, 9, 10, 99, 100, 4026531833, 2 ** 32, 2 ** 32 + 1, 10 ** 15, Number.MAX_SAFE_INTEGER];
  for (let n = 1; n < 2 ** 53; n = n * 7 + 3) numbers.push(n);
  const out = new JsonBytes();
  for (const n of numbers) {
    out.uint(n);
    out.bytes(encoded(','));
  }
  out.uintOrNull(null);
  out.bool(true);
  out.bool(false);
  assert.equal(text([out.take()]), `${numbers.join(',')},nulltruefalse`);
  assert.equal(out.take(), undefined, 'nothing written since');
});

test('full() after a chunk; take() hands each chunk over once; one text larger than the slack still fits', () => {
  const out = new JsonBytes(64);
  const chunks: Array<Buffer | undefined> = [];
  const expected: string[] = [];
  for (let i = 0; i < 100; i++) {
    const piece = `"é${i}",`;
    out.bytes(encoded(piece));
    expected.push(piece);
    if (out.full()) chunks.push(out.take());
  }
  const big = 'x'.repeat(1000);
  out.bytes(encoded(big));
  out.uint(12345);
  chunks.push(out.take());
  assert.ok(chunks.length > 5, `${chunks.length} chunks`);
  assert.equal(text(chunks), `${expected.join('')}${big}12345`);
});
