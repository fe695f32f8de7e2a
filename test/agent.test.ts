/**
 * `sockleak agent` and `sockleak report`, for real: the agent runs as a CLI
 * process (as root) against leaks the test makes; the stream is decoded with
 * the published proto/sockleak/v1/sockleak.proto; recordings are replayed without root.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import protobuf from 'protobufjs';
import { encodeRecord, decodeRecordBytes } from '../src/recording/schema';
import { LeakIndex, type LeakSource } from '../src/agent/leak-index';
import { monotonicNowNs } from '../src/clock';
import { cookieKey, cookieText } from '../src/cookie-map';
import { fromSocket, toSocket } from '../src/recording/mapping';
import { StreamHub, type SubscriberSink } from '../src/agent/stream-hub';
import type { LeakRecord } from '../src/watch-records';
import { ExitCode } from '../src/errors';
import type { SocketInfo } from '../src/sockets';
import { CLI, ROOT, httpRequest, runCli, sleep, startAgentProcess, startFixture, startLeakyHolder, waitFor, type AgentProcess, type Backend, type Holder } from './helpers';

const dir = mkdtempSync(path.join(os.tmpdir(), 'sockleak-agent-'));
chmodSync(dir, 0o755); // report runs as nobody
const cleanups: Array<() => void> = [];
after(() => {
  for (const c of cleanups.reverse()) c();
  rmSync(dir, { recursive: true, force: true });
});

/** The published schema, loaded the way a user's client would. */
const Record = protobuf.loadSync(path.join(ROOT, 'proto', 'sockleak', 'v1', 'sockleak.proto')).lookupType('sockleak.v1.Record');

type Decoded = { [k: string]: unknown };
const toPlain = (m: protobuf.Message): Decoded => Record.toObject(m, { longs: String, enums: String }) as Decoded;

/** Splits length-delimited records off the front of `buf`; returns the rest. */
function takeRecords(buf: Buffer, out: Decoded[]): Buffer {
  for (;;) {
    let len = 0;
    let i = 0;
    for (; i < 5 && i < buf.length; i++) {
      len += (buf[i]! & 0x7f) * 2 ** (7 * i);
      if ((buf[i]! & 0x80) === 0) break;
    }
    if (i >= buf.length || i === 5 || buf.length < i + 1 + len) return buf;
    out.push(toPlain(Record.decode(buf.subarray(i + 1, i + 1 + len))));
    buf = buf.subarray(i + 1 + len);
  }
}

/** The message bytes of one length-delimited record. */
function unframe(buf: Buffer, at = 0): Buffer {
  let len = 0;
  let i = 0;
  for (; ; i++) {
    len += (buf[at + i]! & 0x7f) * 2 ** (7 * i);
    if ((buf[at + i]! & 0x80) === 0) break;
  }
  return buf.subarray(at + i + 1, at + i + 1 + len);
}

/** Byte offsets where each record of a length-delimited file starts. */
function recordOffsets(buf: Buffer): number[] {
  const offsets: number[] = [];
  for (let at = 0; at < buf.length; ) {
    offsets.push(at);
    let len = 0;
    let i = 0;
    for (; ; i++) {
      len += (buf[at + i]! & 0x7f) * 2 ** (7 * i);
      if ((buf[at + i]! & 0x80) === 0) break;
    }
    at += i + 1 + len;
  }
  return offsets;
}

interface AgentCli extends AgentProcess {
  rssKb(): number;
}

async function startAgentCli(args: string[]): Promise<AgentCli> {
  const agent = await startAgentProcess(args);
  const status = `/proc/${agent.child.pid}/status`;
  return { ...agent, rssKb: () => Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(status, 'utf8'))?.[1]) };
}

/** `name{labels} value` lines of /metrics whose labels include every `want` pair. */
function metric(text: string, name: string, want: { [label: string]: string } = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(want).every(([k, v]) => labels[k] === v)) return Number(m[3]);
  }
  return undefined;
}

/** A subscriber that reads /stream and decodes every record. */
function subscribe(base: string): { records: Decoded[]; close(): void; contentType: Promise<string> } {
  const records: Decoded[] = [];
  let pending: Buffer = Buffer.alloc(0);
  let req: http.ClientRequest | undefined;
  const contentType = new Promise<string>((resolve, reject) => {
    req = http.get(`${base}/stream`, (res) => {
      resolve(String(res.headers['content-type']));
      res.on('data', (d: Buffer) => (pending = takeRecords(Buffer.concat([pending, d]), records)));
      res.on('error', () => undefined);
    });
    req.on('error', reject);
  });
  return { records, close: () => req?.destroy(), contentType };
}

/** `count` leaked (CLOSE_WAIT) sockets held by one new process: connected, then the backend goes away. */
async function leakyProcess(host: string, count: number): Promise<{ holder: Holder; backend: Backend }> {
  const leaky = await startLeakyHolder(host, count);
  cleanups.push(() => leaky.holder.kill());
  return leaky;
}

const leakCookies = (records: Decoded[], pid: number): Set<string> => {
  const out = new Set<string>();
  for (const r of records) {
    const socket = (r.leak as { socket?: { cookie: string; owners?: Array<{ pid: number }> } } | undefined)?.socket;
    if (socket?.owners?.some((o) => o.pid === pid)) out.add(socket.cookie);
  }
  return out;
};

const cookiesOf = (sockets: SocketInfo[], pid: number): string[] =>
  sockets.filter((s) => s.owners.some((o) => o.pid === pid)).map((s) => s.cookie).sort();

test('mapping: a socket survives TypeScript -> protobuf -> TypeScript unchanged (nulls included)', () => {
  const socket: SocketInfo = {
    cookie: '18446744073709551615',
    state: 'CLOSE_WAIT',
    family: 6,
    local: '[::1]:40000',
    remote: '[::1]:80',
    netns: 4026531840,
    owners: [{ pid: 7, comm: 'svc', fd: 3 }, { pid: 8, comm: 'svc', fd: 4 }],
    creator: null,
    recvQ: 1,
    sendQ: 0,
    keepalive: false,
    keepaliveProbeInMs: null,
    keepaliveReapByMs: null,
    stateAgeMs: 0,
    ageEstimated: true,
    uid: 0,
  };
  const bytes = encodeRecord({ timeUnixMs: 1, seq: 1, leak: { socket: toSocket(socket) } });
  const body = decodeRecordBytes(unframe(bytes));
  assert.ok('leak' in body && body.leak.socket);
  assert.deepEqual(fromSocket(body.leak.socket), socket);
  const withCreator = { ...socket, creator: { pid: 7, tid: 9, comm: 'w' }, keepalive: true, keepaliveProbeInMs: 5, keepaliveReapByMs: 50, stateAgeMs: null };
  const again = encodeRecord({ timeUnixMs: 1, seq: 2, leak: { socket: toSocket(withCreator) } });
  const body2 = decodeRecordBytes(unframe(again));
  assert.ok('leak' in body2 && body2.leak.socket);
  assert.deepEqual(fromSocket(body2.leak.socket), withCreator);
  // cgroup, container and pod (Owner and Creator fields 4-6): present where known, absent (not '') where not.
  const id = 'ab'.repeat(32);
  const inPod = { cgroup: `/kubepods/pod0d5b8a3c-1f2e-4b6a-9c1d-2e3f4a5b6c7d/${id}`, containerId: id, podUid: '0d5b8a3c-1f2e-4b6a-9c1d-2e3f4a5b6c7d' };
  const placed = { ...socket, owners: [{ pid: 7, comm: 'svc', fd: 3, ...inPod }, { pid: 8, comm: 'svc', fd: 4, cgroup: '/' }], creator: { pid: 7, tid: 9, comm: 'w', cgroup: '(gone)' } };
  const body3 = decodeRecordBytes(unframe(encodeRecord({ timeUnixMs: 1, seq: 3, leak: { socket: toSocket(placed) } })));
  assert.ok('leak' in body3 && body3.leak.socket);
  assert.deepEqual(fromSocket(body3.leak.socket), placed);
});

const leakRecord = (cookie: string, pid: number, ageMs: number): LeakRecord => ({
  type: 'leak',
  cookie,
  state: 'CLOSE_WAIT',
  family: 4,
  local: '127.0.0.1:40000',
  remote: '127.0.0.2:80',
  netns: 1,
  owners: [{ pid, comm: `p${pid}`, fd: 3 }],
  creator: null,
  recvQ: 0,
  sendQ: 0,
  keepalive: false,
  keepaliveProbeInMs: null,
  keepaliveReapByMs: null,
  stateAgeMs: ageMs,
  ageEstimated: false,
  uid: 0,
});

/** The engine's side of LeakIndex, over plain records in report order (the index asks with cookie keys, numbers here). */
function fakeEngine(): { source: LeakSource; open: Map<string, LeakRecord>; evicted: string[] } {
  const open = new Map<string, LeakRecord>();
  const evicted: string[] = [];
  const enteredNs = (r: LeakRecord): number => monotonicNowNs() - (r.stateAgeMs ?? 0) * 1e6;
  const source: LeakSource = {
    get size() {
      return open.size;
    },
    leak: (cookie) => open.get(cookieText(cookie)),
    openCookies: () => [...open.keys()].map(cookieKey),
    oldestReported: () => {
      const first = open.keys().next();
      return first.done ? undefined : cookieKey(first.value);
    },
    forEachHolder: (each) => {
      for (const r of open.values()) {
        if (r.owners.length === 0) each(-1, '', true, undefined);
        r.owners.forEach((o, i) => each(o.pid, o.comm, i === 0, o.cgroup === undefined ? undefined : { ...o, cgroup: o.cgroup }));
      }
    },
    countByRemote: () => {
      const counts = new Map<string, number>();
      for (const r of open.values()) counts.set(r.remote, (counts.get(r.remote) ?? 0) + 1);
      return counts;
    },
    oldestEnteredNs: () => (open.size ? Math.min(...[...open.values()].map(enteredNs)) : undefined),
    evict: (cookie) => {
      open.delete(cookieText(cookie));
      evicted.push(cookieText(cookie));
    },
  };
  return { source, open, evicted };
}

test('LeakIndex: bounded, the oldest reported evicted (from the engine too) and counted, resolved leave at once, top K + other', () => {
  const engine = fakeEngine();
  const index = new LeakIndex(3, engine.source);
  const report = (record: LeakRecord): void => {
    engine.open.set(record.cookie, record);
    index.apply(record);
  };
  report(leakRecord('1', 10, 5000));
  report(leakRecord('2', 10, 1000));
  report(leakRecord('3', 11, 1000));
  engine.open.delete('2');
  index.apply({ type: 'resolved', cookie: '2', local: '', remote: '', closedBy: null, how: 'peer', heldMs: 1 });
  report(leakRecord('4', 12, 1000));
  assert.equal(index.size, 3);
  assert.equal(index.evictions, 0, 'the resolved one made room');
  report(leakRecord('5', 12, 0));
  assert.equal(index.size, 3);
  assert.equal(index.evictions, 1);
  assert.deepEqual(engine.evicted, ['1'], 'the engine is told to drop it');
  assert.deepEqual([...index.sockets()].map((s) => s.cookie), ['3', '4', '5'], 'cookie 1, the oldest reported, went');
  assert.ok(!('type' in [...index.sockets()][0]!), 'sockets, not records');
  const oldest = index.oldestAgeMs();
  assert.ok(oldest >= 1000 && oldest < 1500, `the oldest tracked is cookie 3 or 4, 1 s (${oldest})`);
  assert.deepEqual(index.byProcess(1), [
    { pid: '12', comm: 'p12', count: 2 },
    { pid: 'other', comm: 'other', count: 1 },
  ]);
  engine.open.delete('3'); // resolved in the engine, its record not yet applied: skipped, not an error
  assert.deepEqual([...index.sockets()].map((s) => s.cookie), ['4', '5']);
});

/** A socket that takes bytes only when told to. */
class FakeSink implements SubscriberSink {
  writableNeedDrain = true;
  readonly written: Buffer[] = [];
  private drain: (() => void) | undefined;
  write(chunk: Buffer): boolean {
    this.written.push(chunk);
    return true;
  }
  once(_event: 'drain', listener: () => void): this {
    this.drain = listener;
    return this;
  }
  open(): void {
    this.writableNeedDrain = false;
    const d = this.drain;
    this.drain = undefined;
    d?.();
  }
}

test('StreamHub: a stalled subscriber holds at most its queue bound; then a Gap, a fresh Snapshot, and the records since', () => {
  let snapshots = 0;
  const snapshot = (): Buffer => encodeRecord({ timeUnixMs: 1, seq: 0, snapshot: { takenAt: 'x', sockets: [], lost: 0, part: 0, more: false, thresholdMs: 0, host: 'h' } });
  const hub = new StreamHub(4096, 2, () => {
    snapshots++;
    return [snapshot()][Symbol.iterator]();
  });
  const sink = new FakeSink();
  assert.ok(hub.subscribe(sink));
  const record = (seq: number): Buffer => encodeRecord({ timeUnixMs: 1, seq, counters: { emitted: seq, lost: 0, mapFull: 0, missed: 0, evictions: 0, streamDropped: 0 } });
  for (let seq = 1; seq <= 10_000; seq++) {
    hub.publish(record(seq));
    assert.ok(hub.queuedBytes <= 4096, `bounded: ${hub.queuedBytes}`);
  }
  assert.ok(hub.dropped > 9000, `dropped ${hub.dropped}`);
  assert.equal(sink.written.length, 0);
  sink.open();
  const got = sink.written.map((b) => decodeRecordBytes(unframe(b)));
  assert.ok('gap' in got[0]! && Number(got[0].gap.droppedRecords) === hub.dropped, 'a Gap with the count first');
  assert.ok('snapshot' in got[1]!, 'then a fresh Snapshot');
  assert.equal(snapshots, 2, 'one at subscription (never sent: dropped with the queue), one after the Gap');
  const seqs = got.slice(2).map((r) => Number(r.seq));
  assert.equal(seqs[seqs.length - 1], 10_000, 'then the newest records, in order');
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
  assert.ok(hub.subscribe(new FakeSink()));
  assert.equal(hub.subscribe(new FakeSink()), null, 'at most maxSubscribers');
});

test('report: corrupt input -> exit 65 naming the offset; missing file -> 66; no root needed, addon never loaded', () => {
  const asNobody = { asUser: 65534, env: { SOCKLEAK_ADDON: '/nonexistent/sockleak.node' } };
  const good = Buffer.concat([
    encodeRecord({ timeUnixMs: 1000, seq: 0, snapshot: { takenAt: new Date(1000).toISOString(), sockets: [], lost: 0, part: 0, more: false, thresholdMs: 30000, host: 'h' } }),
    encodeRecord({ timeUnixMs: 2000, seq: 1, counters: { emitted: 5, lost: 0, mapFull: 0, missed: 0, evictions: 0, streamDropped: 0 } }),
  ]);
  const cases: Array<[string, Buffer, RegExp]> = [
    ['garbage.bin', Buffer.concat([good, Buffer.from([0x05, 0xff, 0xff, 0xff, 0xff, 0xff])]), new RegExp(`corrupt record at byte offset ${good.length}\\b`)],
    ['zeros.bin', Buffer.concat([good, Buffer.alloc(64)]), new RegExp(`corrupt record at byte offset ${good.length}\\b`)],
    ['huge.bin', Buffer.concat([good, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])]), new RegExp(`byte offset ${good.length}\\b`)],
    ['cut.bin', good.subarray(0, good.length - 3), new RegExp(`truncated record at byte offset ${recordOffsets(good)[1]}\\b`)],
  ];
  for (const [name, bytes, pattern] of cases) {
    const file = path.join(dir, name);
    writeFileSync(file, bytes, { mode: 0o644 });
    const r = runCli(['report', file], asNobody);
    assert.equal(r.code, ExitCode.DATA, `${name}: ${r.stderr}`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, pattern);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
    assert.match(r.stdout, /^recording .*host h/, `${name}: the report of what came before`);
  }
  const ok = path.join(dir, 'good.bin');
  writeFileSync(ok, good, { mode: 0o644 });
  const r = runCli(['report', ok, '--json'], asNobody);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { takenAt: new Date(2000).toISOString(), sockets: [], lost: 0 });
  const directory = runCli(['report', dir], asNobody);
  assert.equal(directory.code, ExitCode.DATA, directory.stderr);
  assert.match(directory.stderr, /^sockleak: .*a directory, not a recording\)\n$/);
  const missing = runCli(['report', path.join(dir, 'nope.bin')], asNobody);
  assert.equal(missing.code, ExitCode.NO_INPUT);
  assert.match(missing.stderr, /^sockleak: .*nope\.bin: no such file\n$/);
});

test('agent: metrics per leaking pid, decoded stream, 405, recording = live snapshot, cut recording, SIGTERM -> 0, restart re-finds', { timeout: 120_000 }, async (t) => {
  // Leaks made before the agent starts (re-found by its start-up snapshot) and after.
  const before = await leakyProcess('127.0.9.1', 5);
  await sleep(1200);
  const record = path.join(dir, 'run1.rec');
  // --top 1000: other processes' leaks on a shared machine must not push this test's two out of the top K.
  const agent = await startAgentCli(['--listen', '127.0.0.1:0', '--record', record, '--threshold', '1s', '--interval', '1s', '--top', '1000']);
  const sub = subscribe(agent.base);
  assert.match(await sub.contentType, /^application\/x-protobuf/);
  const later = await leakyProcess('127.0.9.2', 7);

  let text = '';
  const until = Date.now() + 15_000;
  for (;;) {
    text = (await httpRequest(`${agent.base}/metrics`)).body;
    const a = metric(text, 'sockleak_process_close_wait_leaked_sockets', { pid: String(before.holder.pid) });
    const b = metric(text, 'sockleak_process_close_wait_leaked_sockets', { pid: String(later.holder.pid) });
    if (a === 5 && b === 7) break;
    assert.ok(Date.now() < until, `metrics never showed 5 and 7 leaks (got ${a}, ${b}):\n${text}`);
    await sleep(200);
  }
  assert.equal(metric(text, 'sockleak_process_info', { pid: String(later.holder.pid), comm: 'python3' }), 1, 'comm in the info series');
  assert.ok((metric(text, 'sockleak_close_wait_oldest_age_seconds') ?? 0) >= 1);
  assert.ok((metric(text, 'sockleak_sockets', { state: 'CLOSE_WAIT' }) ?? 0) >= 12);
  for (const name of ['sockleak_events_total', 'sockleak_lost_events_total', 'sockleak_missed_events_total', 'sockleak_map_full_total', 'sockleak_evictions_total']) {
    assert.notEqual(metric(text, name), undefined, `${name} present`);
  }

  // The subscriber decoded the stream with the published schema: a snapshot first, then the leaks.
  await waitFor(() => leakCookies(sub.records, later.holder.pid).size === 7, 5000, 'leak records on /stream');
  assert.ok('snapshot' in sub.records[0]!, 'a subscriber starts with a Snapshot');
  const leak = sub.records.find((r) => leakCookies([r], later.holder.pid).size)!.leak as { socket: Decoded };
  assert.equal(leak.socket.state, 'TCP_STATE_CLOSE_WAIT');
  assert.equal(leak.socket.remote, later.backend.remote);

  assert.equal((await httpRequest(`${agent.base}/metrics`, 'POST')).status, 405);
  assert.equal((await httpRequest(`${agent.base}/stream`, 'DELETE')).status, 405);
  const health = await httpRequest(`${agent.base}/healthz`);
  assert.equal(health.status, 200);

  const live = runCli(['snapshot', '--json']);
  assert.equal(live.code, 0, live.stderr);
  const snap = JSON.parse(live.stdout) as { sockets: SocketInfo[] };
  sub.close();
  agent.child.kill('SIGTERM');
  assert.equal(await agent.exited, 0, agent.stderr());

  // Replayed without root: the same leak set as the live snapshot, for both processes. The recording
  // itself is private (0600); the user is handed a copy.
  assert.equal(statSync(record).mode & 0o777, 0o600);
  const asNobody = { asUser: 65534, env: { SOCKLEAK_ADDON: '/nonexistent/sockleak.node' } };
  assert.equal(runCli(['report', record], asNobody).code, ExitCode.NO_PERMISSION, 'nobody cannot read the recording itself');
  const handed = path.join(dir, 'run1-copy.rec');
  writeFileSync(handed, readFileSync(record), { mode: 0o644 });
  const replay = runCli(['report', handed, '--json'], asNobody);
  assert.equal(replay.code, 0, replay.stderr);
  const replayed = JSON.parse(replay.stdout) as { sockets: SocketInfo[] };
  for (const pid of [before.holder.pid, later.holder.pid]) {
    assert.deepEqual(cookiesOf(replayed.sockets, pid), cookiesOf(snap.sockets, pid), `pid ${pid}`);
  }
  assert.equal(cookiesOf(replayed.sockets, later.holder.pid).length, 7);
  const recordedPorts = (JSON.parse(replay.stdout) as { ports?: { netns: Array<{ byRemote: Array<{ remote: string; other: number }> }> } }).ports;
  // Ports are counted at start and every minute: the start count has the 5 sockets made before.
  const toBefore = recordedPorts?.netns.flatMap((n) => n.byRemote).find((r) => r.remote === before.backend.remote);
  assert.ok(toBefore && toBefore.other >= 5, `the Ports record counts the 5 sockets to ${before.backend.remote} (${JSON.stringify(toBefore)})`);
  const human = runCli(['report', handed], asNobody);
  assert.equal(human.code, 0);
  assert.match(human.stdout, new RegExp(`pid ${later.holder.pid} \\(python3\\).* holds 7 CLOSE_WAIT sockets to ${later.backend.remote.replace(/\./g, '\\.')}`));

  // Cut inside the last leak record: what came before is still reported, the offset is named.
  const bytes = readFileSync(record);
  const offsets = recordOffsets(bytes);
  const leakOffsets = offsets.filter((o) => {
    const body = decodeRecordBytes(unframe(bytes, o));
    return 'leak' in body && !!body.leak.socket?.owners.some((w) => w.pid === later.holder.pid);
  });
  const cutAt = leakOffsets[leakOffsets.length - 1]!;
  const cut = path.join(dir, 'cut.rec');
  writeFileSync(cut, bytes.subarray(0, cutAt + 10), { mode: 0o644 });
  const partial = runCli(['report', cut, '--json'], asNobody);
  assert.equal(partial.code, ExitCode.DATA);
  assert.match(partial.stderr, new RegExp(`^sockleak: .*cut\\.rec: truncated record at byte offset ${cutAt} .*\\n$`));
  const partialLeaks = JSON.parse(partial.stdout) as { sockets: SocketInfo[] };
  assert.equal(cookiesOf(partialLeaks.sockets, later.holder.pid).length, 6, 'the leaks before the cut');
  assert.equal(cookiesOf(partialLeaks.sockets, before.holder.pid).length, 5);

  // Restart with the default address: the start-up snapshot re-finds every leak still there.
  const record2 = path.join(dir, 'run2.rec');
  const defaultFree = await new Promise<boolean>((resolve) => {
    const probe = net.createServer().once('error', () => resolve(false));
    probe.listen(9466, '127.0.0.1', () => probe.close(() => resolve(true)));
  });
  const again = await startAgentCli([...(defaultFree ? [] : ['--listen', '127.0.0.1:0']), '--record', record2, '--threshold', '1s', '--top', '1000']);
  if (defaultFree) {
    assert.equal(again.base, 'http://127.0.0.1:9466', 'binds 127.0.0.1:9466 by default');
    const listening = readFileSync('/proc/net/tcp', 'utf8').split('\n').filter((l) => / 0A /.test(l) && /:24FA /.test(l));
    assert.ok(listening.length >= 1 && listening.every((l) => /^\s*\d+: 0100007F:24FA /.test(l)), `only 127.0.0.1:9466 listens:\n${listening.join('\n')}`);
  } else {
    t.diagnostic('port 9466 is taken by another process: the default address was not checked');
  }
  // Its /metrics and its recording (replayed) show them all again.
  const until2 = Date.now() + 15_000;
  for (;;) {
    const m = (await httpRequest(`${again.base}/metrics`)).body;
    const a = metric(m, 'sockleak_process_close_wait_leaked_sockets', { pid: String(before.holder.pid) });
    const b = metric(m, 'sockleak_process_close_wait_leaked_sockets', { pid: String(later.holder.pid) });
    if (a === 5 && b === 7) break;
    assert.ok(Date.now() < until2, `the restarted agent never showed 5 and 7 leaks (got ${a}, ${b})`);
    await sleep(200);
  }
  await sleep(1200); // a flush: kill -9 loses at most the last second
  const first: Decoded[] = [];
  takeRecords(readFileSync(record2), first);
  assert.ok(first[0] && 'session' in first[0], 'a recording starts with a Session record');
  assert.ok(first[1] && 'snapshot' in first[1], 'then a Snapshot');
  const copy = path.join(dir, 'run2-so-far.rec');
  writeFileSync(copy, readFileSync(record2), { mode: 0o644 });
  const refound = JSON.parse(runCli(['report', copy, '--json'], asNobody).stdout) as { sockets: SocketInfo[] };
  for (const pid of [before.holder.pid, later.holder.pid]) {
    assert.deepEqual(cookiesOf(refound.sockets, pid), cookiesOf(snap.sockets, pid), `restart re-finds pid ${pid}'s leaks`);
  }
  again.child.kill('SIGINT');
  assert.equal(await again.exited, 0, again.stderr());
  before.holder.kill();
  later.holder.kill();
});

/** Opens `n` connections to a server that closes them at once, holds them ~0.6 s (CLOSE_WAIT), closes, repeats. */
const CHURN = `
import socket, sys, time
host, port, n, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
end = time.time() + secs
while time.time() < end:
    socks = []
    for i in range(n):
        s = socket.socket()
        s.connect((host, port))
        socks.append(s)
    time.sleep(0.6)
    for s in socks:
        s.close()
`;

async function churn(host: string, port: number, n: number, seconds: number): Promise<void> {
  const child = spawn('python3', ['-c', CHURN, host, String(port), String(n), String(seconds)], { stdio: 'inherit' });
  cleanups.push(() => child.exitCode === null && child.kill('SIGKILL'));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  assert.equal(code, 0, 'churn client');
}

test('agent: slow /stream subscribers lose old records (counted) and do not grow its memory', { timeout: 120_000 }, async (t) => {
  const server = net.createServer((s) => s.destroy());
  cleanups.push(() => server.close());
  await new Promise<void>((resolve) => server.listen(0, '127.0.9.3', resolve));
  const { port } = server.address() as net.AddressInfo;
  const queue = 64 * 1024;
  const agent = await startAgentCli(['--listen', '127.0.0.1:0', '--threshold', '200ms', '--stream-queue', '64k', '--record', path.join(dir, 'slow.rec')]);
  await churn('127.0.9.3', port, 1000, 3); // warm up: the heap reaches its working size
  const rssBefore = agent.rssKb();

  // Subscribers that connect and never read.
  const { port: agentPort } = new URL(agent.base);
  const slow = Array.from({ length: 4 }, () => {
    const s = net.connect(Number(agentPort), '127.0.0.1', () => s.write('GET /stream HTTP/1.1\r\nHost: x\r\n\r\n'));
    cleanups.push(() => s.destroy());
    s.pause();
    s.on('error', () => undefined);
    return s;
  });
  await churn('127.0.9.3', port, 2000, 10);
  const text = (await httpRequest(`${agent.base}/metrics`)).body;
  const rssAfter = agent.rssKb();
  const produced = metric(text, 'sockleak_records_total', { type: 'leak' }) ?? 0;
  const pushed = metric(text, 'sockleak_recording_bytes_total') ?? 0;
  const dropped = metric(text, 'sockleak_stream_dropped_records_total') ?? 0;
  const queued = metric(text, 'sockleak_stream_queued_bytes') ?? Infinity;
  t.diagnostic(`${produced} leak records, ${pushed} bytes to each subscriber, ${dropped} dropped, ${queued} bytes queued, RSS ${rssBefore} -> ${rssAfter} kB`);
  assert.equal(metric(text, 'sockleak_stream_subscribers'), 4);
  assert.ok(produced > 5000, `enough records pushed (${produced} leaks)`);
  assert.ok(dropped > 0, 'slow subscribers lost records, counted');
  assert.ok(queued <= 4 * (queue + 4096), `queues bounded: ${queued} bytes`);
  // Coarse: other processes' leaks on a shared machine move the agent's RSS too; the exact check is the queue gauge above.
  assert.ok(rssAfter - rssBefore < 96 * 1024, `RSS grew ${rssBefore} -> ${rssAfter} kB`);

  for (const s of slow) s.destroy();
  agent.child.kill('SIGTERM');
  assert.equal(await agent.exited, 0, agent.stderr());
});

test('agent: --max-sockets bounds the leaks it tracks; the oldest reported are evicted from the engine (not re-reported) and counted', async () => {
  const count = 1200;
  const max = 1024;
  const server = net.createServer((s) => s.destroy()); // our FIN at once: the holder's ends go CLOSE_WAIT
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', 1024, resolve));
  cleanups.push(() => server.close());
  const port = (server.address() as net.AddressInfo).port;
  const holder = startFixture('hold-many', [String(count), '127.0.0.1', String(port)]);
  cleanups.push(() => holder.kill());
  const { pid } = await holder.next<{ pid: number }>();
  const agent = await startAgentCli(['--listen', '127.0.0.1:0', '--threshold', '200ms', '--max-sockets', String(max), '--top', '1000']);
  let text = '';
  const read = async (): Promise<{ tracked: number; evicted: number; leaks: number }> => {
    text = (await httpRequest(`${agent.base}/metrics`)).body;
    return {
      tracked: metric(text, 'sockleak_close_wait_leaked_sockets') ?? -1,
      evicted: metric(text, 'sockleak_evictions_total') ?? 0,
      leaks: metric(text, 'sockleak_records_total', { type: 'leak' }) ?? 0,
    };
  };
  let now = await read();
  for (const until = Date.now() + 30_000; now.leaks < count && Date.now() < until; now = await read()) await sleep(250);
  assert.ok(now.leaks >= count, `all ${count} reported (${now.leaks} leak records)`);
  assert.equal(now.tracked, max, 'tracked: exactly the bound');
  // (other processes' leaks on a shared machine count too: at least ours past the bound)
  assert.ok(now.evicted >= count - max && now.evicted <= now.leaks - max, `leaks past the bound evicted and counted (${now.evicted})`);
  assert.ok((metric(text, 'sockleak_process_close_wait_leaked_sockets', { pid: String(pid) }) ?? 0) <= max);
  await sleep(2000); // the evicted ones stay forgotten: the kernel map dropped them, so no new report
  const later = await read();
  assert.ok(later.leaks - now.leaks < count - max, `evicted leaks not re-reported (${now.leaks} -> ${later.leaks} leak records)`);
  assert.equal(later.tracked, max);
  agent.child.kill('SIGTERM');
  assert.equal(await agent.exited, 0, agent.stderr());
  assert.match(agent.stderr(), new RegExp(`${max} leaks open, .* \\d+ evicted`));
});
