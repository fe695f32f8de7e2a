/**
 * The leak engine's table (leak-table.ts) on its own: index, slot reuse, report
 * order, pending records, growth. Its records are written by the generated
 * layout, as the iterator writes them; the engine's use of it against the
 * kernel is in leaks.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { RawSock } from '../src/scan/close-wait-scan';
import { SOCK, SOCK_SIZE } from '../src/generated/layout';
import { LeakTable } from '../src/watch/leak-table';
import { SockDecoder } from '../src/scan/sock-decoder';

/** An IPv4 struct sl_sock from 127.0.0.1:`sport` to 10.0.0.`peer`:9000. */
function record(sport: number, peer: number): RawSock {
  const buf = Buffer.alloc(SOCK_SIZE);
  buf.writeUInt16LE(2, SOCK.family.offset);
  buf.set([127, 0, 0, 1], SOCK.saddr.offset);
  buf.set([10, 0, 0, peer], SOCK.daddr.offset);
  buf.writeUInt16LE(sport, SOCK.sport.offset);
  buf.writeUInt16LE(9000, SOCK.dport.offset);
  buf.writeUInt32LE(4026531840, SOCK.netns_ino.offset);
  return { buf, decoder: new SockDecoder(buf), at: 0, held: false };
}

function open(t: LeakTable, cookie: number | string, sport = 40000): number {
  const s = t.add(cookie, record(sport, 7), null, false, 1e9);
  t.report(s);
  t.taken(s);
  return s;
}

test('LeakTable: 50k cookies in and half out in mixed order: every lookup right, report order kept, slots reused', () => {
  const t = new LeakTable();
  // Sequential cookies (as the kernel hands them out) and far-apart ones, which share low bits.
  const cookies = Array.from({ length: 50_000 }, (_, i) => (i % 2 ? 1_000_000 + i : i * 4294967296 + 17));
  for (const c of cookies) open(t, c);
  assert.equal(t.size, cookies.length);
  const gone = new Set(cookies.filter((_, i) => i % 3 === 0));
  for (const c of gone) t.remove(t.slotOf(c));
  for (const c of cookies) assert.equal(t.has(c), !gone.has(c), `cookie ${c}`);
  assert.equal(t.size, cookies.length - gone.size);
  assert.deepEqual([...t.keys()], cookies.filter((c) => !gone.has(c)), 'report order, the removed ones left out');
  open(t, 7_000_000);
  assert.ok(t.slotOf(7_000_000) < cookies.length, 'a freed slot is reused before the table grows');
  assert.equal(t.cookieKey(t.first()), cookies[1], 'the oldest reported still open comes first');
});

test('LeakTable: a leak removed while its record is pending stays readable until taken, then its slot is free', () => {
  const t = new LeakTable();
  const s = t.add(5, record(40001, 3), { pid: 9, tid: 9, comm: 'w' }, true, 123);
  assert.equal(t.size, 0, 'tentative: not counted');
  assert.equal(t.has(5), false);
  t.report(s);
  t.setOwners(s, [{ pid: 42, comm: 'svc', fd: 7 }]);
  t.remove(s); // resolved before the leak record was handed out
  assert.equal(t.has(5), false);
  const r = t.record(s, 1000);
  assert.equal(r.cookie, '5');
  assert.equal(r.local, '127.0.0.1:40001');
  assert.equal(r.remote, '10.0.0.3:9000');
  assert.deepEqual(r.owners, [{ pid: 42, comm: 'svc', fd: 7 }]);
  assert.deepEqual(r.creator, { pid: 9, tid: 9, comm: 'w' });
  assert.equal(r.ageEstimated, true);
  assert.equal(open(t, 6), s === 0 ? 1 : 0, 'still pending: not reused');
  t.taken(s);
  assert.equal(open(t, 8), s, 'taken: reused');
});

test('LeakTable: several holders, owners kept or cut, and a cookie past 2^53', () => {
  const t = new LeakTable();
  const big = '18446744073709551615';
  const s = open(t, big);
  assert.equal(t.slotOf(big), s);
  assert.equal(t.cookieKey(s), big);
  const owners = [
    { pid: 1, comm: 'a', fd: 3 },
    { pid: 2, comm: 'b', fd: 4 },
  ];
  t.setOwners(s, owners);
  assert.equal(t.ownerCount(s), 2);
  assert.equal(t.ownerCommAt(s, 1), 'b');
  t.keepOwners(s, 1);
  assert.deepEqual(t.owners(s), [owners[0]]);
  t.keepOwners(s, 0);
  assert.equal(t.ownerCount(s), 0);
  const iterated: Array<number | string> = [];
  for (const c of t.openCookies()) {
    iterated.push(c);
    t.remove(t.slotOf(c)); // removals during a lazy iteration do no harm
  }
  assert.deepEqual(iterated, [big]);
  assert.equal(t.size, 0);
});

test('LeakTable: countByRemote counts open leaks per remote endpoint (high-bit IPv4 addresses, IPv6), tentative and removed ones left out', () => {
  const t = new LeakTable();
  const v4 = (sport: number, daddr: number[], dport: number): RawSock => {
    const r = record(sport, 0);
    r.buf.set(daddr, SOCK.daddr.offset);
    r.buf.writeUInt16LE(dport, SOCK.dport.offset);
    return r;
  };
  const v6 = (sport: number): RawSock => {
    const r = record(sport, 0);
    r.buf.writeUInt16LE(10, SOCK.family.offset);
    r.buf.set([0xfd, 0, ...Array<number>(13).fill(0), 1], SOCK.daddr.offset);
    return r;
  };
  let cookie = 1;
  const add = (sock: RawSock, reported = true): number => {
    const s = t.add(cookie++, sock, null, false, 1e9);
    if (reported) t.report(s);
    t.taken(s);
    return s;
  };
  for (let i = 0; i < 3; i++) add(v4(40000 + i, [255, 1, 2, 3], 9000));
  add(v4(40010, [255, 1, 2, 3], 9001)); // same host, other port
  add(v4(40011, [10, 0, 0, 7], 9000));
  add(v6(40020));
  add(v6(40021));
  add(v4(40030, [10, 0, 0, 8], 9000), false); // tentative: not a leak yet
  t.remove(add(v4(40031, [10, 0, 0, 9], 9000)));
  assert.deepEqual(
    Object.fromEntries(t.countByRemote()),
    { '255.1.2.3:9000': 3, '255.1.2.3:9001': 1, '10.0.0.7:9000': 1, '[fd00::1]:9000': 2 },
  );
});
