/** CookieMap and CookieIndex (cookie-map.ts): the engine's typed set of new leaks in a step, and the one cookie hash table. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CookieIndex, CookieMap } from '../src/cookie-map';

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

test('CookieIndex: rows found by cookie through churn (backward-shift deletion), and a reset', () => {
  const rows = 5000;
  const keys = new Float64Array(rows);
  const index = new CookieIndex();
  index.reset(keys, rows);
  const live = new Map<number, number>(); // cookie -> row
  let seed = 7;
  const rand = (): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
  // Cookies of one high word and one low word apart collide in many buckets: long runs to shift.
  const cookie = (): number => (rand() % 64) * 4294967296 + (rand() % 4096);
  for (let round = 0; round < 50_000; round++) {
    const row = rand() % rows;
    const old = keys[row]!;
    if (live.get(old) === row) {
      index.remove(row);
      live.delete(old);
    } else {
      const c = cookie();
      if (live.has(c)) continue;
      keys[row] = c;
      index.add(row);
      live.set(c, row);
    }
  }
  assert.ok(live.size > 1000);
  for (const [c, row] of live) assert.equal(index.find(c), row);
  for (let i = 0; i < 1000; i++) {
    const c = cookie();
    if (!live.has(c)) assert.equal(index.find(c), -1, `absent ${c}`);
  }
  index.reset(keys, rows);
  assert.equal(index.find([...live.keys()][0]!), -1, 'a reset empties it');
  assert.equal(new CookieIndex().find(1), -1, 'an index never sized finds nothing');
});
