/**
 * `snapshot --json` is written straight from the scan's records
 * (src/scan/snapshot-json.ts), not by stringifying snapshot()'s objects: the two
 * must give the same document. Both renderings here come from the same
 * records, of real sockets: owned once, twice (dup), by two processes (fork),
 * with keepalive, IPv6, and unowned (in a backlog, found by iter/tcp).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, test } from 'node:test';
import { forcedRefusals } from '../src/kernel/fallbacks';
import { decodeScan, SocketScanner } from '../src/scan/scan';
import { sameScan } from '../src/scan/snapshot';
import { snapshotJson } from '../src/scan/snapshot-json';
import { listenNeverAccepting, runCli, sleep, startBackend, startHolder, waitFor, type Holder } from './helpers';

const cleanups: Array<() => void> = [];
after(() => cleanups.forEach((c) => c()));

/** The path forced by SOCKLEAK_REFUSE (scripts/test-fallbacks.sh) reads owners from /proc and sock_diag. */
const refused = forcedRefusals();
const ownersWithoutBpf = refused.includes('bpf') || (refused.includes('scan_files') && refused.includes('scan_files_cast'));

/** Normalises the ages, which each rendering reads from the clock when it starts. */
const sameClock = (json: string): string => json.replace(/"stateAgeMs":\d+/g, '"stateAgeMs":0');

test('snapshot --json, written from the records, is JSON.stringify of the snapshot decoded from the same records', async (t) => {
  const holder: Holder = await startHolder();
  cleanups.push(() => holder.kill());
  const v4 = await startBackend('127.0.0.1');
  const { fd } = await holder.request<{ fd: number }>({ op: 'connect', host: v4.host, port: v4.port });
  await holder.request({ op: 'dup', fd });
  const { fd: kept } = await holder.request<{ fd: number }>({ op: 'connect', host: v4.host, port: v4.port });
  await holder.request({ op: 'keepalive', fd: kept, idle: 600, intvl: 30, cnt: 5 });
  const { child } = await holder.request<{ child: number }>({ op: 'fork' });
  cleanups.push(() => process.kill(child, 'SIGKILL'));
  try {
    const v6 = await startBackend('::1');
    await holder.request({ op: 'connect', host: v6.host, port: v6.port });
    await waitFor(() => v6.accepted.length === 1);
    await v6.remove();
  } catch {
    t.diagnostic('no IPv6 loopback: IPv6 not covered');
  }
  await waitFor(() => v4.accepted.length === 2);
  await v4.remove();

  const listener = await listenNeverAccepting('127.0.0.7');
  assert.ok(listener, 'a listener on 127.0.0.7');
  cleanups.push(() => listener.kill());
  const backlog = net.connect({ host: '127.0.0.7', port: listener.port });
  await once(backlog, 'connect');
  backlog.destroy();
  await sleep(200);

  const scanner = new SocketScanner();
  try {
    for (const states of [['CLOSE_WAIT'], undefined] as const) {
      const raw = await scanner.scanRaw(states ? { states } : {});
      const takenAt = new Date().toISOString();
      const written = Buffer.concat([...snapshotJson(raw, takenAt)]).toString('utf8');
      const sockets = [...decodeScan(raw).values()];
      assert.equal(sameClock(written), sameClock(`${JSON.stringify({ takenAt, sockets, lost: 0 })}\n`), `states ${states ?? 'all'}`);

      const mine = sockets.filter((s) => s.owners.some((o) => o.pid === holder.pid));
      assert.ok(mine.some((s) => s.owners.length === 4), 'a socket dup()ed, then forked: two fds in each of two processes');
      // Kernel jiffies to ms: the first probe within the 600 s idle time, then 5 probes 30 s apart.
      const kept = mine.find((s) => s.keepalive);
      assert.ok(kept?.keepaliveProbeInMs != null, `a socket with keepalive: ${JSON.stringify(mine)}`);
      assert.ok(kept.keepaliveProbeInMs > 590_000 && kept.keepaliveProbeInMs <= 600_000, `first probe in ${kept.keepaliveProbeInMs} ms`);
      // Without the BPF owner scan (sock_diag and /proc), a socket's own keepalive settings are not seen: the netns defaults stand in.
      if (!ownersWithoutBpf) assert.equal(kept.keepaliveReapByMs, kept.keepaliveProbeInMs + 5 * 30_000);
      assert.ok(raw.orphans.length > 0 && sockets.some((s) => s.owners.length === 0), 'the backlog socket, from iter/tcp');

      const aged = JSON.parse(Buffer.concat([...snapshotJson(raw, takenAt, 60_000)]).toString('utf8')) as { sockets: typeof sockets };
      const agedMine = aged.sockets.filter((s) => s.owners.some((o) => o.pid === holder.pid));
      assert.deepEqual(agedMine, [], '--older-than 1m: none of the test\'s sockets is that old');
    }
  } finally {
    scanner.close();
  }
});

test('sameScan: the options a scan depends on (states, in any order, and pid), and nothing else', () => {
  assert.ok(sameScan({}, { states: ['CLOSE_WAIT'] }), 'CLOSE_WAIT is the default');
  assert.ok(sameScan({}, { olderThanMs: 5_000 }), '--older-than filters after the scan');
  assert.ok(sameScan({ states: ['ESTABLISHED', 'CLOSE_WAIT'] }, { states: ['CLOSE_WAIT', 'ESTABLISHED'] }));
  assert.ok(sameScan({ states: 'all' }, { states: 'all' }));
  assert.ok(!sameScan({}, { states: 'all' }));
  assert.ok(!sameScan({}, { states: ['ESTABLISHED'] }));
  assert.ok(!sameScan({ states: ['CLOSE_WAIT'] }, { states: ['CLOSE_WAIT', 'ESTABLISHED'] }));
  assert.ok(!sameScan({}, { pid: process.pid }));
});

// The CLI starts the default scan (CLOSE_WAIT, every process) before it has
// parsed its arguments (cli/head-start.ts): other arguments must get their own.
test('snapshot CLI: --state and --pid get their own scan, not the default one started early', async () => {
  const holder: Holder = await startHolder();
  cleanups.push(() => holder.kill());
  const backend = await startBackend('127.0.0.1');
  await holder.request({ op: 'connect', host: backend.host, port: backend.port });
  await holder.request({ op: 'connect', host: backend.host, port: backend.port });
  await waitFor(() => backend.accepted.length === 2);
  backend.accepted[0]!.destroy(); // one of the holder's two goes CLOSE_WAIT
  await sleep(200);
  const holderSockets = (args: string[]): Array<{ state: string }> => {
    const r = runCli(['snapshot', '--json', ...args]);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout) as { sockets: Array<{ state: string; remote: string; owners: Array<{ pid: number }> }> };
    return doc.sockets.filter((s) => s.remote === backend.remote && s.owners.some((o) => o.pid === holder.pid));
  };
  try {
    assert.deepEqual(holderSockets([]).map((s) => s.state), ['CLOSE_WAIT'], 'default');
    assert.deepEqual(holderSockets(['--state', 'established']).map((s) => s.state), ['ESTABLISHED']);
    assert.deepEqual(holderSockets(['--state=established']).map((s) => s.state), ['ESTABLISHED']);
    assert.deepEqual(holderSockets(['--state', 'all']).map((s) => s.state).sort(), ['CLOSE_WAIT', 'ESTABLISHED']);
    assert.deepEqual(holderSockets(['--pid', String(holder.pid), '--state', 'all']).map((s) => s.state).sort(), ['CLOSE_WAIT', 'ESTABLISHED']);
    const r = runCli(['snapshot', '--json', '--pid', String(process.pid)]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((JSON.parse(r.stdout) as { sockets: unknown[] }).sockets, [], 'the test process holds no CLOSE_WAIT socket');
  } finally {
    await backend.remove();
  }
});
