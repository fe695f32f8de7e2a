/** The port arithmetic (the kernel's connect() rule), the forecast and the map decoding, on made-up inputs. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CLOSE_COUNT, CLOSE_COUNT_SIZE, CLOSE_KEY, CLOSE_KEY_SIZE } from '../src/generated/layout';
import { decodeActiveCloses } from '../src/ports/port-closes';
import { exhaustInSec, pressureRecord } from '../src/ports/port-pressure';
import { parsePortList, type PortSysctls } from '../src/ports/port-sysctls';
import { portUsage, splitEndpoint } from '../src/ports/port-usage';
import type { SocketInfo } from '../src/sockets';
import type { TcpState } from '../src/tcp-states';

let cookie = 0;
function sock(state: TcpState, local: string, remote: string, stateAgeMs: number | null = 5000): SocketInfo {
  return {
    cookie: String(++cookie),
    state,
    family: local.startsWith('[') ? 6 : 4,
    local,
    remote,
    netns: 1,
    owners: [],
    creator: null,
    recvQ: 0,
    sendQ: 0,
    keepalive: false,
    keepaliveProbeInMs: null,
    keepaliveReapByMs: null,
    stateAgeMs,
    ageEstimated: true,
    uid: 0,
  };
}

const base: PortSysctls = { portRange: [40000, 40199], twReuse: 0, twReuseDelayMs: 1000, timestamps: true, reserved: [] };

test('free per destination: range minus ports used to that destination, TIME_WAIT included', () => {
  const sockets = [
    ...[0, 1, 2].map((i) => sock('TIME_WAIT', `10.0.0.1:${40000 + i}`, '10.0.0.5:80', 30_000 + i)),
    sock('ESTABLISHED', '10.0.0.1:40003', '10.0.0.5:80'),
    sock('SYN_SENT', '10.0.0.1:40004', '10.0.0.5:80'),
    sock('TIME_WAIT', '10.0.0.1:40000', '10.0.0.6:80'), // same port, other destination: both fine
  ];
  const ns = portUsage(7, sockets, base);
  assert.equal(ns.usablePorts, 200);
  assert.equal(ns.timeWait, 4);
  assert.deepEqual(ns.byRemote[0], { remote: '10.0.0.5:80', timeWait: 3, established: 1, other: 1, free: 195, used: 5, nextFreeInMs: 29_998 });
  assert.deepEqual(ns.byRemote[1], { remote: '10.0.0.6:80', timeWait: 1, established: 0, other: 0, free: 199, used: 1, nextFreeInMs: 55_000 });
  assert.deepEqual(ns.bySource, [{ source: '10.0.0.1', timeWait: 4, established: 1 }]);
});

test('accepted connections and listeners: never a destination; a listener in the range takes its port from every destination', () => {
  const sockets = [
    sock('LISTEN', '0.0.0.0:8080', '0.0.0.0:0'),
    sock('ESTABLISHED', '10.0.0.1:8080', '10.0.0.9:40001'),
    sock('LISTEN', '0.0.0.0:40010', '0.0.0.0:0'),
    sock('ESTABLISHED', '10.0.0.1:40010', '10.0.0.9:51000'),
    sock('TIME_WAIT', '10.0.0.1:40020', '10.0.0.5:80'),
  ];
  const ns = portUsage(7, sockets, base);
  assert.deepEqual([ns.boundPorts, ns.usablePorts], [1, 199]);
  assert.deepEqual(ns.byRemote.map((r) => [r.remote, r.free]), [['10.0.0.5:80', 198]]);
});

test('odd-sized range: connect() tries all ports but one per destination, and the top one may be taken; reserved ports are not usable', () => {
  // __inet_hash_connect(): an even count, stepping by 2 from a hashed start, wrapping only past the top.
  const odd = portUsage(7, [sock('TIME_WAIT', '10.0.0.1:40198', '10.0.0.5:80')], { ...base, portRange: [40000, 40198] });
  assert.equal(odd.usablePorts, 198);
  assert.deepEqual([odd.byRemote[0]!.timeWait, odd.byRemote[0]!.used, odd.byRemote[0]!.free], [1, 1, 197], 'the top port is one a connection can take');
  const reserved = portUsage(7, [sock('TIME_WAIT', '10.0.0.1:40005', '10.0.0.5:80')], { ...base, reserved: parsePortList('40000-40009,40100,39000-39999,40100') });
  assert.deepEqual([reserved.reservedPorts, reserved.usablePorts, reserved.byRemote[0]!.free], [11, 189, 189]);
});

test('tcp_tw_reuse: 2 frees loopback TIME_WAIT older than the delay, 1 any, none without timestamps', () => {
  const sockets = [
    sock('TIME_WAIT', '127.0.0.1:40000', '127.0.0.1:80', 5000),
    sock('TIME_WAIT', '127.0.0.1:40001', '127.0.0.1:80', 500), // younger than tcp_tw_reuse_delay
    sock('TIME_WAIT', '10.0.0.1:40000', '10.0.0.5:80', 5000),
    sock('TIME_WAIT', '[::1]:40002', '[::1]:80', 5000),
  ];
  const free = (s: PortSysctls): Array<[string, number]> => portUsage(7, sockets, s).byRemote.map((r) => [r.remote, r.free] as [string, number]).sort();
  assert.deepEqual(free({ ...base, twReuse: 0 }), [['10.0.0.5:80', 199], ['127.0.0.1:80', 198], ['[::1]:80', 199]]);
  assert.deepEqual(free({ ...base, twReuse: 2 }), [['10.0.0.5:80', 199], ['127.0.0.1:80', 199], ['[::1]:80', 200]]);
  assert.deepEqual(free({ ...base, twReuse: 1 }), [['10.0.0.5:80', 200], ['127.0.0.1:80', 199], ['[::1]:80', 200]]);
  assert.deepEqual(free({ ...base, twReuse: 1, timestamps: false }), free({ ...base, twReuse: 0 }));
});

test('two source addresses to one destination: the busier one runs out first', () => {
  const sockets = [
    ...[0, 1, 2].map((i) => sock('TIME_WAIT', `10.0.0.1:${40000 + i}`, '10.0.0.5:80')),
    sock('TIME_WAIT', '10.0.0.2:40000', '10.0.0.5:80'),
  ];
  assert.deepEqual(portUsage(7, sockets, base).byRemote.map((r) => [r.timeWait, r.used, r.free]), [[4, 3, 197]]);
  assert.deepEqual(splitEndpoint('[fe80::1]:443'), { host: 'fe80::1', port: 443 });
});

test('parsePortList: the ip_local_reserved_ports syntax', () => {
  assert.deepEqual(parsePortList('\n'), []);
  assert.deepEqual(parsePortList('1,2-4, 10\n'), [[1, 1], [2, 4], [10, 10]]);
});

test('forecast: exhausted now, in ~N s, or never at this rate; remedies follow the netns settings', () => {
  const r = { remote: '10.0.0.5:80', timeWait: 27_900, established: 1, other: 0, free: 331, used: 27_901, nextFreeInMs: 1000 };
  assert.equal(exhaustInSec({ ...r, free: 0 }, 28_232, 500), 0);
  assert.equal(exhaustInSec(r, 28_232, 500), 1);
  assert.equal(exhaustInSec({ ...r, free: 2000 }, 28_232, 500), 4);
  assert.equal(exhaustInSec(r, 28_232, 470), null, '470/s x 60 s levels off at 28 200 + 1 of 28 232 ports');
  assert.equal(exhaustInSec(r, 28_232, 10), null);
  const ns = portUsage(7, [], { ...base, portRange: [32768, 60999] });
  const record = pressureRecord(ns, r, { ...base, portRange: [32768, 60999], twReuse: 2 }, [{ pid: 4321, comm: 'batch', ratePerSec: 500 }], 812);
  assert.equal(record.forecast, 'at the current rate (500/s), the range for 10.0.0.5:80 is exhausted in ~1s');
  assert.deepEqual([record.ratePerSec, record.recentFailures, record.usable, record.exhaustInSec], [500, 812, 28_232, 1]);
  assert.match(record.remedies[0]!, /reuse connections .*pid 4321 \(batch\) closes 500\/s to 10\.0\.0\.5:80/);
  const slow = pressureRecord(ns, r, base, [{ pid: 4321, comm: 'batch', ratePerSec: 100 }], 0);
  assert.equal(slow.forecast, 'at the current rate (100/s), TIME_WAIT to 10.0.0.5:80 levels off at ~6000 of 28232 ports');
  const full = pressureRecord(ns, { ...r, free: 0, nextFreeInMs: 12_300 }, base, [], 5);
  assert.equal(full.forecast, 'the 28232 ports for 10.0.0.5:80 are exhausted: connect() fails with EADDRNOTAVAIL; the oldest TIME_WAIT gives a port back in ~13s');
  assert.ok(record.remedies.some((x) => /tcp_tw_reuse=1 .*\(now 2\)/.test(x)), 'tw_reuse=2 does not cover a remote destination');
  const loop = pressureRecord(ns, { ...r, remote: '127.0.0.1:80' }, { ...base, twReuse: 2 }, [], 0);
  assert.ok(!loop.remedies.some((x) => /tcp_tw_reuse/.test(x)), 'tw_reuse=2 already covers loopback');
  assert.ok(loop.remedies.some((x) => /pace the client below 470 new connections\/s/.test(x)));
});

test('decodeActiveCloses: (sl_close_key, sl_close_count) pairs through address.ts', () => {
  const buf = Buffer.alloc(2 * (CLOSE_KEY_SIZE + CLOSE_COUNT_SIZE));
  const put = (at: number, family: number, daddr: number[], port: number, count: bigint): void => {
    Buffer.from(daddr).copy(buf, at + CLOSE_KEY.daddr.offset);
    buf.writeUInt32LE(4026531840, at + CLOSE_KEY.netns_ino.offset);
    buf.writeUInt32LE(4321, at + CLOSE_KEY.pid.offset);
    buf.writeUInt16LE(port, at + CLOSE_KEY.dport.offset);
    buf.writeUInt16LE(family, at + CLOSE_KEY.family.offset);
    buf.writeBigUInt64LE(count, at + CLOSE_KEY_SIZE + CLOSE_COUNT.count.offset);
    buf.write('batch', at + CLOSE_KEY_SIZE + CLOSE_COUNT.comm.offset, 'latin1');
  };
  put(0, 2, [10, 0, 0, 5], 80, 470n);
  put(CLOSE_KEY_SIZE + CLOSE_COUNT_SIZE, 10, [...Array(15).fill(0), 1], 443, 3n);
  assert.deepEqual(decodeActiveCloses(buf), [
    { netns: 4026531840, pid: 4321, comm: 'batch', remote: '10.0.0.5:80', count: 470 },
    { netns: 4026531840, pid: 4321, comm: 'batch', remote: '[::1]:443', count: 3 },
  ]);
});
