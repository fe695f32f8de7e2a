/** CookieMap (cookie-map.ts): the engine's typed set of new leaks in a step. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CookieMap } from '../src/cookie-map';

test('CookieMap: sequential and far-apart cookies, text keys past 2^53, sized once', () => {
  const cookies = Array.from({ length: 30_000 }, (_, i) => (i % 2 ? 5_000_000 + i : i * 4294967296 + 3));
  const m = new CookieMap(cookies.length + 1);
  cookies.forEach((c, i) => m.set(c, i * 96));
  m.set('18446744073709551615', 7);
  assert.equal(m.size, cookies.length + 1);
  cookies.forEach((c, i) => assert.equal(m.get(c), i * 96));
  assert.equal(m.get(3), 0, 'a value of 0 is an ordinary value');
  assert.equal(m.get(1), -1);
  assert.equal(m.get('18446744073709551615'), 7);
  assert.equal(m.has(4294967296), false);
  assert.deepEqual(new Set(m.keys()), new Set([...cookies, '18446744073709551615']));
  m.set(cookies[0]!, 1);
  assert.equal(m.size, cookies.length + 1, 'a repeat replaces');
  assert.throws(() => m.set(9, 0), RangeError, 'more than it was sized for');
});
