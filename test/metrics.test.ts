/**
 * The agent's metrics (src/agent/metrics.ts) fed a machine far bigger than the
 * test machine: many network namespaces, processes and remotes, the
 * processes replaced by new pids between scrapes. Every label stays within its
 * documented bound, and `promtool check metrics` accepts the output. The live
 * agent's /metrics is checked the same way in prometheus.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LeakIndex, type LeakSource } from '../src/agent/leak-index';
import { AgentMetrics, MAX_COMMS, type MetricsSource } from '../src/agent/metrics';
import type { NetnsPorts } from '../src/recording/records';
import type { StateCount } from '../src/agent/state-counts';
import { promtool } from './prometheus-server';

interface Leak {
  pids: number[];
  remote: string;
  /** The holders' container ID, if they run in one. */
  container?: string;
}

/** LeakIndex over a plain list of leaks: what byProcess and byRemote read. */
function leakIndex(leaks: () => Leak[]): LeakIndex {
  const source: LeakSource = {
    get size() {
      return leaks().length;
    },
    leak: () => undefined,
    openCookies: () => [],
    oldestReported: () => undefined,
    forEachHolder: (each) => {
      for (const l of leaks()) {
        if (l.pids.length === 0) each(-1, '', true, undefined);
        l.pids.forEach((pid, i) => each(pid, `svc-${pid % 7}`, i === 0, l.container === undefined ? undefined : { cgroup: `/kubepods/pod${l.container.slice(-8)}-0000-4000-8000-000000000000/${l.container}`, containerId: l.container, podUid: `${l.container.slice(-8)}-0000-4000-8000-000000000000` }));
      }
    },
    countByRemote: () => {
      const counts = new Map<string, number>();
      for (const l of leaks()) counts.set(l.remote, (counts.get(l.remote) ?? 0) + 1);
      return counts;
    },
    oldestEnteredNs: () => undefined,
    evict: () => undefined,
  };
  return new LeakIndex(1 << 20, source);
}

const netnsPorts = (netns: number, remotes: number): NetnsPorts => ({
  netns,
  portRange: [32768, 60999],
  usablePorts: 28232,
  reservedPorts: 0,
  boundPorts: 0,
  twReuse: 2,
  timeWait: netns % 1000,
  established: 1,
  byRemote: Array.from({ length: remotes }, (_, i) => ({
    remote: `10.${netns % 250}.0.${i}:80`,
    timeWait: (netns % 97) * 10 + i,
    established: 0,
    other: 0,
    free: 28232 - i,
    used: i,
    nextFreeInMs: null,
  })),
  bySource: [],
});

/** `name{labels} value` lines of one family, as label maps. */
function series(text: string, name: string): Array<Record<string, string>> {
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .map((l) => Object.fromEntries([...l.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!])));
}

test('metrics: every label bounded (top K + other) on a big machine, pids replaced between scrapes, promtool check metrics passes', async () => {
  const K = 5;
  const NETNS = 200;
  let firstPid = 1000;
  // 300 processes holding 1..300 leaks each (some leaks held by two processes, some by none), to 40 remotes.
  const leaks = (): Leak[] =>
    Array.from({ length: 3000 }, (_, i) => ({
      pids: i % 50 === 0 ? [] : i % 11 === 0 ? [firstPid + (i % 300), firstPid + ((i + 1) % 300)] : [firstPid + (i % 300)],
      remote: `10.0.${i % 40}.1:9000`,
      ...(i % 3 !== 0 && { container: (firstPid + (i % 30)).toString(16).padStart(64, '0') }),
    }));
  const counts: StateCount[] = [];
  for (let n = 0; n < NETNS; n++) for (const state of ['ESTABLISHED', 'TIME_WAIT', 'CLOSE_WAIT'] as const) counts.push({ netns: 4026531840 + n, state, count: n + 1 });
  const source: MetricsSource = {
    leaks: leakIndex(leaks),
    top: K,
    thresholdMs: 30_000,
    version: '9.9.9',
    stateCounts: () => counts,
    ports: () => ({ takenAt: new Date().toISOString(), netns: Array.from({ length: NETNS }, (_, n) => netnsPorts(4026531840 + n, 20)) }),
    kernel: () => ({ emitted: 10n, lost: 1n, mapFull: 2n, missed: 3n }),
    // A forecast for every one of the 300 processes: only the top K's pids may appear.
    forecasts: () =>
      Array.from({ length: 300 }, (_, i) => ({
        type: 'forecast' as const,
        pid: firstPid + i,
        comm: `svc-${(firstPid + i) % 7}`,
        leaksPerHour: 360,
        leaksInWindow: 360,
        windowMs: 3_600_000,
        openFds: 412,
        fdLimit: 1024,
        exhaustInSec: 6120,
        firstLeakAt: '2026-12-07T02:14:00.000Z',
        firstLeakEstimated: false,
        running: true,
        forecast: '',
      })),
    streamDropped: () => 0,
    subscribers: () => 0,
    streamQueuedBytes: () => 0,
    recordingBytes: () => 0,
  };
  const metrics = new AgentMetrics(source);
  for (let i = 0; i < 2 * MAX_COMMS; i++) {
    metrics.observe({ type: 'connect-failure', pid: i, tid: i, comm: `job-${i}`, remote: '10.0.0.5:80', errno: 'EADDRNOTAVAIL', count: 1, netns: 1 });
  }

  for (let scrape = 0; scrape < 2; scrape++) {
    const { body } = await metrics.text();
    const lint = promtool(['check', 'metrics'], body);
    assert.equal(lint.code, 0, lint.out);
    assert.equal(lint.out.trim(), '', 'no lint findings');

    const netns = new Set(series(body, 'sockleak_sockets').map((s) => s.netns));
    assert.equal(netns.size, K + 1, `top ${K} netns + other: ${[...netns].join(' ')}`);
    assert.ok(netns.has('other'));
    const total = series(body, 'sockleak_sockets').length;
    assert.equal(total, (K + 1) * 3, 'a series per state per shown netns');
    const other = body.match(/^sockleak_sockets\{state="TIME_WAIT",netns="other"\} (\d+)$/m);
    assert.equal(Number(other?.[1]), ((NETNS - K) * (NETNS - K + 1)) / 2, 'other sums the rest');

    const pids = series(body, 'sockleak_process_close_wait_leaked_sockets').map((s) => s.pid!);
    assert.equal(pids.length, K + 1, `top ${K} (leaks without a holder, pid="none", among them) + other: ${pids.join(' ')}`);
    assert.ok(pids.includes('other') && pids.includes('none'));
    assert.ok(pids.every((p) => p === 'other' || p === 'none' || Number(p) >= firstPid), 'this scrape\'s pids only: the old ones are gone');
    const info = series(body, 'sockleak_process_info');
    assert.deepEqual(info.map((s) => s.pid).sort(), [...pids].sort(), 'an info series for exactly those pids');
    assert.ok(info.every((s) => s.comm !== undefined && s.cgroup !== undefined));
    assert.equal(body.match(/^sockleak_process_close_wait_leaked_sockets\{[^}]*comm=/m), null, 'comm only on the info series');

    const numeric = pids.filter((p) => p !== 'other' && p !== 'none').sort();
    for (const name of ['sockleak_process_open_fds', 'sockleak_process_fd_limit', 'sockleak_process_close_wait_leaks_per_second', 'sockleak_process_fd_exhaustion_seconds', 'sockleak_process_first_leak_timestamp_seconds']) {
      assert.deepEqual(series(body, name).map((s) => s.pid).sort(), numeric, `${name}: the top K pids only`);
    }
    assert.match(body, new RegExp(`^sockleak_process_fd_exhaustion_seconds\\{pid="${numeric[0]}"\\} 6120$`, 'm'));
    assert.match(body, new RegExp(`^sockleak_process_close_wait_leaks_per_second\\{pid="${numeric[0]}"\\} 0\\.1$`, 'm'));
    assert.match(body, new RegExp(`^sockleak_process_first_leak_timestamp_seconds\\{pid="${numeric[0]}"\\} 1796609640$`, 'm'));
    const containers = series(body, 'sockleak_container_close_wait_leaked_sockets').map((s) => s.container!);
    assert.equal(containers.length, K + 1, `top ${K} containers (holders in none among them) + other: ${containers.join(' ')}`);
    assert.ok(containers.includes('other') && containers.includes('none'));
    assert.ok(containers.every((c) => c === 'other' || c === 'none' || Number.parseInt(c, 16) >= firstPid), "this scrape's containers only");
    const pods = series(body, 'sockleak_container_info');
    assert.deepEqual(pods.map((s) => s.container).sort(), containers.filter((c) => c !== 'other' && c !== 'none').sort(), 'a pod series for exactly the shown containers in pods');
    assert.ok(pods.every((s) => /^[0-9a-f]{8}-0000-4000-8000-000000000000$/.test(s.pod_uid!)));

    const remotes = series(body, 'sockleak_remote_close_wait_leaked_sockets').map((s) => s.remote);
    assert.equal(remotes.length, K + 1);
    assert.ok(remotes.includes('other'));
    assert.equal(series(body, 'sockleak_time_wait_sockets').length, K);
    const free = series(body, 'sockleak_free_ports');
    assert.equal(free.length, K);
    const usable = new Set(series(body, 'sockleak_usable_ports').map((s) => s.netns));
    assert.ok(usable.size <= 2 * K, `usable ports: ${usable.size} netns`);
    for (const f of free) assert.ok(usable.has(f.netns!), `a budget for netns ${f.netns} of ${f.remote}`);

    const comms = new Set(series(body, 'sockleak_connect_failures_total').map((s) => s.comm));
    assert.equal(comms.size, MAX_COMMS + 1, `${MAX_COMMS} comms + other`);
    assert.match(body, /^sockleak_missed_events_total 3$/m);
    assert.match(body, /^sockleak_build_info\{version="9\.9\.9",nodejs="v\d+\.\d+\.\d+"\} 1$/m);
    assert.match(body, /^sockleak_close_wait_threshold_seconds 30$/m);
    for (const family of body.matchAll(/^# TYPE (\S+) counter$/gm)) assert.match(family[1]!, /_total$/, 'counters end in _total');

    firstPid += 10_000; // every process restarted: new pids
  }
});
