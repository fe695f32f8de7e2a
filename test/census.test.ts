/**
 * The census that tells snapshot whether any socket in the asked states is
 * held by no process: census_ehash (bpf/scan.bpf.c) walks the kernel's
 * established hash itself. It must find what sock_diag finds, owned or not,
 * IPv4 and IPv6, and sockets it meets before anyone gave them a cookie must
 * still be matched with their holders, by endpoints.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, test } from 'node:test';
import { formatEndpoint } from '../src/address';
import { CENSUS_SOCK, CENSUS_SOCK_SIZE, SOCK, SOCK_SIZE } from '../src/generated/layout';
import { networkNamespaces, openNativeScanner, ownNetns, runScan, stateMask } from '../src/scan/native-scan';
import { allHeld, censusOfWalk, decodeScan, SocketScanner } from '../src/scan/scan';
import { listenNeverAccepting, sleep, startBackend, startHolder, waitFor } from './helpers';

const cleanups: Array<() => void> = [];
after(() => cleanups.forEach((c) => c()));

const CLOSE_WAIT = stateMask(['CLOSE_WAIT']);

interface Walked {
  cookie: bigint;
  local: string;
  remote: string;
  state: number;
}

/** census_ehash's records, decoded. */
function decodeWalk(buf: Buffer): Walked[] {
  const out: Walked[] = [];
  for (let at = 0; at + CENSUS_SOCK_SIZE <= buf.length; at += CENSUS_SOCK_SIZE) {
    const family = buf.readUInt16LE(at + CENSUS_SOCK.family.offset) === 2 ? 4 : 6;
    const address = (field: { offset: number }): Uint8Array => buf.subarray(at + field.offset, at + field.offset + 16);
    out.push({
      cookie: buf.readBigUInt64LE(at + CENSUS_SOCK.cookie.offset),
      local: formatEndpoint(family, address(CENSUS_SOCK.saddr), buf.readUInt16LE(at + CENSUS_SOCK.sport.offset)),
      remote: formatEndpoint(family, address(CENSUS_SOCK.daddr), buf.readUInt16LE(at + CENSUS_SOCK.dport.offset)),
      state: buf.readUInt8(at + CENSUS_SOCK.state.offset),
    });
  }
  return out;
}

/** The records of `buf` (struct sl_census_sock) whose local endpoint is one of `locals`. */
function onlyThese(buf: Buffer, locals: string[]): Buffer {
  const walked = decodeWalk(buf);
  const parts: Buffer[] = [];
  walked.forEach((w, i) => {
    if (locals.includes(w.local)) parts.push(buf.subarray(i * CENSUS_SOCK_SIZE, (i + 1) * CENSUS_SOCK_SIZE));
  });
  return Buffer.concat(parts);
}

test('census_ehash finds what sock_diag finds, held or not, and matches sockets with no cookie yet to their holders by endpoints', async (t) => {
  const scanner = openNativeScanner();
  cleanups.push(() => scanner.close());
  const holder = await startHolder();
  cleanups.push(() => holder.kill());

  // Three sockets the holder keeps after its peers closed: CLOSE_WAIT, held.
  const held: string[] = [];
  const v4 = await startBackend('127.0.0.1');
  for (let i = 0; i < 2; i++) held.push((await holder.request<{ local: string }>({ op: 'connect', host: v4.host, port: v4.port })).local);
  await waitFor(() => v4.accepted.length === 2);
  await v4.remove();
  try {
    const v6 = await startBackend('::1');
    held.push((await holder.request<{ local: string }>({ op: 'connect', host: v6.host, port: v6.port })).local);
    await waitFor(() => v6.accepted.length === 1);
    await v6.remove();
  } catch {
    t.diagnostic('no IPv6 loopback: IPv6 not covered');
  }
  const inCloseWait = async (locals: string[]): Promise<Walked[]> => {
    const until = Date.now() + 5000;
    for (;;) {
      const found = decodeWalk(await runScan(scanner, { kind: 'ehash', stateMask: CLOSE_WAIT })).filter((w) => locals.includes(w.local));
      if (found.length === locals.length || Date.now() > until) return found;
      await sleep(50);
    }
  };

  // Nothing has asked for these sockets' cookies yet: the walk reads 0.
  const fresh = await inCloseWait(held);
  assert.equal(fresh.length, held.length, 'every held socket in CLOSE_WAIT');
  for (const w of fresh) {
    assert.equal(w.cookie, 0n, `${w.local}: no cookie yet`);
    assert.equal(w.state, 8);
  }
  const walkedBefore = onlyThese(await runScan(scanner, { kind: 'ehash', stateMask: CLOSE_WAIT }), held);
  const census = censusOfWalk(walkedBefore);
  assert.equal(census.cookies.length, 0);
  assert.equal(census.uncookied.length, held.length);

  // iter/task_file gives them cookies and owners; the census, taken before, matches them by endpoints.
  const owned = await runScan(scanner, { kind: 'files', stateMask: CLOSE_WAIT });
  const ownedCookies = new Set<number>();
  for (let at = 0; at + SOCK_SIZE <= owned.length; at += SOCK_SIZE) ownedCookies.add(Number(owned.readBigUInt64LE(at + SOCK.cookie.offset)));
  assert.ok(allHeld(census, ownNetns(), ownedCookies, owned), 'held, by endpoints');
  assert.ok(!allHeld(census, ownNetns() + 1, ownedCookies, owned), 'not held by any process of another namespace');

  // Now with cookies: the walk reads those iter/task_file gave, which sock_diag reports too.
  const diag = await runScan(scanner, { kind: 'cookies', stateMask: CLOSE_WAIT });
  const diagCookies = new Set<bigint>();
  for (let at = 0; at + 8 <= diag.length; at += 8) diagCookies.add(diag.readBigUInt64LE(at));
  for (const w of await inCloseWait(held)) {
    assert.notEqual(w.cookie, 0n, `${w.local}: its cookie`);
    assert.ok(diagCookies.has(w.cookie), `${w.local}: sock_diag has cookie ${w.cookie}`);
  }
  const census2 = censusOfWalk(onlyThese(await runScan(scanner, { kind: 'ehash', stateMask: CLOSE_WAIT }), held));
  assert.equal(census2.uncookied.length, 0);
  assert.ok(allHeld(census2, ownNetns(), ownedCookies, owned), 'held, by cookie');

  // A connection its client closed while it waited in a backlog: CLOSE_WAIT, held by no process.
  const listener = await listenNeverAccepting('127.0.0.9');
  assert.ok(listener, 'a listener on 127.0.0.9');
  cleanups.push(() => listener.kill());
  const listening = `127.0.0.9:${listener.port}`;
  const client = net.connect({ host: '127.0.0.9', port: listener.port });
  await once(client, 'connect');
  const peer = `127.0.0.1:${client.localPort}`;
  client.destroy();
  const [backlog] = await inCloseWait([listening]);
  assert.ok(backlog, 'the backlog socket, in CLOSE_WAIT');
  assert.equal(backlog.remote, peer);
  const withBacklog = censusOfWalk(onlyThese(await runScan(scanner, { kind: 'ehash', stateMask: CLOSE_WAIT }), [...held, listening]));
  assert.ok(!allHeld(withBacklog, ownNetns(), ownedCookies, owned), 'the backlog socket is held by nobody');

  // LISTEN and CLOSE sockets are not in the established hash: the walk refuses them, and scanRaw asks sock_diag.
  await assert.rejects(runScan(scanner, { kind: 'ehash', stateMask: stateMask(['LISTEN']) }));
  await assert.rejects(runScan(scanner, { kind: 'ehash', stateMask: 0 }));
  const sockets = new SocketScanner();
  cleanups.push(() => sockets.close());
  // One census per network namespace that has a process: other work on the machine may add some.
  const namespaces = networkNamespaces().size;
  const raw = await sockets.scanRaw({ states: ['LISTEN'] });
  if (networkNamespaces().size === namespaces) assert.equal(sockets.lastStats.diagCensuses, namespaces, "LISTEN: sock_diag's census in every namespace");
  assert.ok(sockets.lastStats.diagCensuses >= 1, "LISTEN: sock_diag's census");
  const found = [...decodeScan(raw).values()].find((s) => s.local === listening);
  assert.equal(found?.state, 'LISTEN', 'the never-accepting listener');
  assert.equal(found?.owners[0]?.pid, listener.pid);
  await sockets.scanRaw({ states: ['CLOSE_WAIT'] });
  assert.equal(sockets.lastStats.diagCensuses, 0, 'CLOSE_WAIT: the walk');
});

test('census_ehash under churn: every socket that stays is found in every walk, and walks do not give up', async (t) => {
  const scanner = openNativeScanner();
  cleanups.push(() => scanner.close());
  // 100 sockets that stay in CLOSE_WAIT: their peer closed, they never will.
  const closer = net.createServer((s) => s.destroy());
  closer.listen(0, '127.0.0.3');
  await once(closer, 'listening');
  cleanups.push(() => closer.close()); // (open until the end: a failure before the churn must not keep the file alive)
  const kept = await Promise.all(
    Array.from({ length: 100 }, async () => {
      const c = net.connect({ host: '127.0.0.3', port: (closer.address() as net.AddressInfo).port, allowHalfOpen: true });
      c.on('error', () => undefined);
      await once(c, 'connect');
      return c;
    }),
  );
  cleanups.push(() => kept.forEach((c) => c.destroy()));
  const ports = kept.map((c) => c.localPort!);
  const walkedPorts = async (): Promise<Set<number>> =>
    new Set(decodeWalk(await runScan(scanner, { kind: 'ehash', stateMask: CLOSE_WAIT })).map((w) => Number(w.local.split(':').pop())));
  // Each gets there once its peer's FIN is in (slow under emulation): all of them before the churn starts.
  const ready = Date.now() + 10_000;
  let notYet = ports;
  while (notYet.length && Date.now() < ready) {
    const seen = await walkedPorts();
    notYet = ports.filter((p) => !seen.has(p));
    if (notYet.length) await sleep(50);
  }
  assert.deepEqual(notYet, [], 'in CLOSE_WAIT before the churn starts');
  // Meanwhile connections come and go by thousands: sockets are freed and hashed
  // again while the walk reads them (a strayed walk is walked again, not given up).
  const echo = net.createServer((s) => {
    s.on('error', () => undefined);
    s.end();
  });
  echo.listen(0, '127.0.0.1');
  await once(echo, 'listening');
  let churning = true;
  let connections = 0;
  const churn = async (): Promise<void> => {
    while (churning) {
      await new Promise<void>((resolve) => {
        const c = net.connect((echo.address() as net.AddressInfo).port, '127.0.0.1', () => c.end());
        c.on('close', () => resolve());
        c.on('error', () => resolve());
      });
      connections++;
    }
  };
  const workers = Array.from({ length: 8 }, churn);
  let walks = 0;
  let unsure = 0;
  const missed: string[] = [];
  const until = Date.now() + 4000;
  try {
    while (Date.now() < until) {
      let seen: Set<number>;
      try {
        seen = await walkedPorts();
      } catch {
        unsure++;
        continue;
      }
      walks++;
      const missing = ports.filter((p) => !seen.has(p));
      if (missing.length) missed.push(`walk ${walks}: ${missing.length} missed (${missing.slice(0, 3).join(', ')}...)`);
    }
  } finally {
    churning = false;
    await Promise.all(workers);
    echo.close();
  }
  t.diagnostic(`${walks} walks, ${unsure} given up, beside ${connections} connections`);
  assert.ok(walks >= 20, `walks: ${walks}`);
  assert.deepEqual(missed.slice(0, 5), [], `sockets missed by ${missed.length} walks of ${walks}`);
  assert.ok(unsure <= walks / 20, `${unsure} walks of ${walks + unsure} gave up`);
});
