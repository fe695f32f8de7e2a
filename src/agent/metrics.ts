/**
 * The agent's Prometheus metrics (prom-client). Values are read from the
 * agent's state when scraped. Every label's values are bounded, whatever the
 * machine does: processes, network namespaces and destinations to the top K
 * plus `other`, comms of connect failures to MAX_COMMS plus `other`; a pid
 * label appears only on the per-process leak series and on the info series that
 * names it, so a restarted process replaces K series, never adds to every
 * metric. docs/agent.md lists every metric and the bound of every label.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { TraceCounters } from '../events';
import type { ContainerLeaks, LeakIndex, ProcessLeaks } from './leak-index';
import type { AgentRecord, PortsSnapshot } from '../recording/records';
import type { StateCount } from './state-counts';
import type { ProcessForecastRecord } from '../forecast/fd-forecast';
import { processCgroupPath } from '../scan/cgroups';

/** Distinct comm label values of sockleak_connect_failures_total before the rest become `other`. */
export const MAX_COMMS = 64;

/**
 * prom-client's default gauges whose names end in `_total` (promtool check
 * metrics rejects them: `_total` is for counters); each is the sum of a
 * by-type gauge that stays (`nodejs_active_handles{type}`, ...).
 */
const MISNAMED_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** What the metrics read at scrape time. */
export interface MetricsSource {
  leaks: LeakIndex;
  /** Top K for per-process, per-netns and per-destination series. */
  top: number;
  /** The configured CLOSE_WAIT threshold, ms. */
  thresholdMs: number;
  /** sockleak's version (package.json). */
  version: string;
  /** The latest per-state counts (from the last periodic scan). */
  stateCounts(): readonly StateCount[];
  /** The latest ports report; undefined while there is none (or no port tracking). */
  ports(): PortsSnapshot | undefined;
  /** The kernel side's totals. */
  kernel(): TraceCounters;
  /** The latest fd forecast of each process holding leaks (src/forecast/). */
  forecasts(): readonly ProcessForecastRecord[];
  streamDropped(): number;
  subscribers(): number;
  /** Bytes waiting in subscriber queues now. */
  streamQueuedBytes(): number;
  recordingBytes(): number;
}

/** A counter that mirrors a monotonic total kept elsewhere. */
function mirror(registry: Registry, name: string, help: string, read: () => number): void {
  let last = 0;
  new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      const now = read();
      if (now > last) this.inc(now - last);
      last = Math.max(last, now);
    },
  });
}

/**
 * The cgroup a process runs in (scan/cgroups.ts cgroupPathIn), as this
 * agent's cgroup namespace sees it; '' once it is gone.
 */
function cgroupOf(pid: string): string {
  return /^[0-9]+$/.test(pid) ? (processCgroupPath(Number(pid)) ?? '') : ''; // '': exited since the scrape counted it
}

/**
 * Per-netns totals reduced to the `top` netns by `weight`, the rest summed
 * under netns `other`: bounded however many namespaces (pods) come and go.
 */
export function topNetns<T extends { netns: number }>(items: readonly T[], top: number, weight: (item: T) => number): Set<number> {
  const totals = new Map<number, number>();
  for (const item of items) totals.set(item.netns, (totals.get(item.netns) ?? 0) + weight(item));
  return new Set([...totals].sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, top).map(([netns]) => netns));
}

/** The agent's registry: values read from `source` at each scrape (text()), records counted as they pass (observe()). */
export class AgentMetrics {
  readonly registry = new Registry();
  private readonly records: Counter<'type'>;
  private readonly connectFailures: Counter<'errno' | 'comm'>;
  private readonly comms = new Set<string>();
  /** The per-process leak counts of the scrape under way. */
  private processes: readonly ProcessLeaks[] = [];
  private containers: readonly ContainerLeaks[] = [];
  /** The fd forecasts of those processes' numeric pids, running: the five per-process fd metrics read it. */
  private forecasts: readonly ProcessForecastRecord[] = [];

  constructor(private readonly source: MetricsSource) {
    const r = this.registry;
    // The event-loop lag histogram samples once a second: at prom-client's default (every 10 ms)
    // the sampler alone woke the agent 100 times a second.
    collectDefaultMetrics({ register: r, eventLoopMonitoringPrecision: 1000 });
    for (const name of MISNAMED_DEFAULTS) r.removeSingleMetric(name);
    const registers = [r];
    new Gauge({
      name: 'sockleak_build_info',
      help: 'Always 1; the labels say which sockleak and which Node.js runs',
      labelNames: ['version', 'nodejs'] as const,
      registers,
    }).set({ version: source.version, nodejs: process.version }, 1);
    new Gauge({
      name: 'sockleak_close_wait_threshold_seconds',
      help: 'Configured --threshold: a socket in CLOSE_WAIT longer than this is a leak',
      registers,
    }).set(source.thresholdMs / 1000);
    new Gauge({
      name: 'sockleak_sockets',
      help: 'TCP sockets by state and network namespace (inode), from the last periodic scan: the top K netns by sockets, the rest summed as netns="other"',
      labelNames: ['state', 'netns'] as const,
      registers,
      collect() {
        this.reset();
        const counts = source.stateCounts();
        const shown = topNetns(counts, source.top, (c) => c.count);
        const other = new Map<string, number>();
        for (const c of counts) {
          if (shown.has(c.netns)) this.set({ state: c.state, netns: String(c.netns) }, c.count);
          else other.set(c.state, (other.get(c.state) ?? 0) + c.count);
        }
        for (const [state, count] of other) this.set({ state, netns: 'other' }, count);
      },
    });
    new Gauge({
      name: 'sockleak_close_wait_leaked_sockets',
      help: 'Sockets in CLOSE_WAIT longer than the threshold, tracked now',
      registers,
      collect() {
        this.set(source.leaks.size);
      },
    });
    // Both per-process metrics read one list made per scrape (text()): they name the same pids.
    const byProcess = (): readonly ProcessLeaks[] => this.processes;
    new Gauge({
      name: 'sockleak_process_close_wait_leaked_sockets',
      help: 'Leaked CLOSE_WAIT sockets per holding process: the top K processes, the rest summed as pid="other", sockets without a holder as pid="none"; comm and cgroup are in sockleak_process_info',
      labelNames: ['pid'] as const,
      registers,
      collect() {
        this.reset();
        for (const p of byProcess()) this.set({ pid: p.pid }, p.count);
      },
    });
    new Gauge({
      name: 'sockleak_process_info',
      help: 'Always 1: comm and cgroup of each pid of sockleak_process_close_wait_leaked_sockets (join on pid)',
      labelNames: ['pid', 'comm', 'cgroup'] as const,
      registers,
      collect() {
        this.reset();
        for (const p of byProcess()) this.set({ pid: p.pid, comm: p.comm, cgroup: cgroupOf(p.pid) }, 1);
      },
    });
    // The fd forecasts of the same top-K pids (made per scrape in text()): a pid label here is one the per-process leak series names.
    const forecasts = (): readonly ProcessForecastRecord[] => this.forecasts;
    const perProcess = (name: string, help: string, value: (f: ProcessForecastRecord) => number | null): void => {
      new Gauge({
        name,
        help,
        labelNames: ['pid'] as const,
        registers,
        collect() {
          this.reset();
          for (const f of forecasts()) {
            const v = value(f);
            if (v !== null) this.set({ pid: String(f.pid) }, v);
          }
        },
      });
    };
    perProcess('sockleak_process_open_fds', 'Open file descriptors of each pid of sockleak_process_close_wait_leaked_sockets (/proc/PID/fd, read every few seconds)', (f) => f.openFds);
    perProcess('sockleak_process_fd_limit', 'RLIMIT_NOFILE soft limit of each pid of sockleak_process_close_wait_leaked_sockets (absent when unlimited): open() and socket() fail with EMFILE at it', (f) => f.fdLimit);
    perProcess('sockleak_process_close_wait_leaks_per_second', 'CLOSE_WAIT leak rate of each pid of sockleak_process_close_wait_leaked_sockets over the last hour (absent with too few leaks to tell)', (f) =>
      f.leaksPerHour === null ? null : f.leaksPerHour / 3600,
    );
    perProcess('sockleak_process_fd_exhaustion_seconds', 'Seconds until the pid runs out of file descriptors at its leak rate (0: at its limit now; absent when no forecast: too few leaks, or no limit)', (f) => f.exhaustInSec);
    perProcess('sockleak_process_first_leak_timestamp_seconds', 'When the first leaked socket of the pid (since the agent started) entered CLOSE_WAIT, Unix seconds: the start of the incident', (f) =>
      Date.parse(f.firstLeakAt) / 1000,
    );
    // Both per-container metrics read one list made per scrape, like the per-process ones.
    const byContainer = (): readonly ContainerLeaks[] => this.containers;
    new Gauge({
      name: 'sockleak_container_close_wait_leaked_sockets',
      help: 'Leaked CLOSE_WAIT sockets per container of the holding process (its cgroup path names it): the top K containers, the rest summed as container="other", holders in no container (and sockets without a holder) as container="none"; the pod is in sockleak_container_info',
      labelNames: ['container'] as const,
      registers,
      collect() {
        this.reset();
        for (const c of byContainer()) this.set({ container: c.container }, c.count);
      },
    });
    new Gauge({
      name: 'sockleak_container_info',
      help: 'Always 1: the Kubernetes pod UID of each container of sockleak_container_close_wait_leaked_sockets that runs in a pod (join on container)',
      labelNames: ['container', 'pod_uid'] as const,
      registers,
      collect() {
        this.reset();
        for (const c of byContainer()) if (c.podUid !== '') this.set({ container: c.container, pod_uid: c.podUid }, 1);
      },
    });
    new Gauge({
      name: 'sockleak_remote_close_wait_leaked_sockets',
      help: 'Leaked CLOSE_WAIT sockets per remote endpoint: the top K remotes, the rest summed as remote="other"',
      labelNames: ['remote'] as const,
      registers,
      collect() {
        this.reset();
        for (const d of source.leaks.byRemote(source.top)) this.set({ remote: d.remote }, d.count);
      },
    });
    new Gauge({
      name: 'sockleak_close_wait_oldest_age_seconds',
      help: 'How long the oldest leaked socket has been in CLOSE_WAIT (0 when none)',
      registers,
      collect() {
        this.set(source.leaks.oldestAgeMs() / 1000);
      },
    });
    const topRemotes = (): Array<{ netns: string; remote: string; timeWait: number; free: number }> =>
      (source.ports()?.netns ?? [])
        .flatMap((n) => n.byRemote.map((b) => ({ netns: String(n.netns), remote: b.remote, timeWait: b.timeWait, free: b.free })))
        .sort((a, b) => b.timeWait - a.timeWait)
        .slice(0, source.top);
    new Gauge({
      name: 'sockleak_time_wait_sockets',
      help: 'TIME_WAIT sockets per destination and netns (top K destinations)',
      labelNames: ['netns', 'remote'] as const,
      registers,
      collect() {
        this.reset();
        for (const d of topRemotes()) this.set({ netns: d.netns, remote: d.remote }, d.timeWait);
      },
    });
    new Gauge({
      name: 'sockleak_free_ports',
      help: 'Ephemeral ports still free per destination and netns (top K destinations by TIME_WAIT)',
      labelNames: ['netns', 'remote'] as const,
      registers,
      collect() {
        this.reset();
        for (const d of topRemotes()) this.set({ netns: d.netns, remote: d.remote }, d.free);
      },
    });
    new Gauge({
      name: 'sockleak_usable_ports',
      help: 'Ephemeral ports connect() can pick per netns (ip_local_port_range minus reserved and listening ports), each destination\'s budget: the netns of sockleak_free_ports and the top K netns by TIME_WAIT',
      labelNames: ['netns'] as const,
      registers,
      collect() {
        this.reset();
        const netns = source.ports()?.netns ?? [];
        // Every netns a free-ports series names, so that used = 1 - free / usable can be computed for each.
        const shown = topNetns(netns, source.top, (n) => n.timeWait);
        for (const d of topRemotes()) shown.add(Number(d.netns));
        // No "other": a sum of budgets would be no one's budget.
        for (const n of netns) if (shown.has(n.netns)) this.set({ netns: String(n.netns) }, n.usablePorts);
      },
    });
    this.connectFailures = new Counter({
      name: 'sockleak_connect_failures_total',
      help: `connect() failures with EADDRNOTAVAIL (and bind() with EADDRINUSE) by errno and comm (${MAX_COMMS} comms, then "other")`,
      labelNames: ['errno', 'comm'] as const,
      registers,
    });
    this.records = new Counter({
      name: 'sockleak_records_total',
      help: 'Records produced by the agent, by type (leak, resolved, fd-closed, connect-failure, bind-failure, port-pressure, forecast)',
      labelNames: ['type'] as const,
      registers,
    });
    mirror(r, 'sockleak_events_total', 'Events the kernel wrote to the ring buffer', () => Number(source.kernel().emitted));
    mirror(r, 'sockleak_lost_events_total', 'Events lost: ring buffer full, or a slow reader', () => Number(source.kernel().lost));
    mirror(r, 'sockleak_missed_events_total', 'Events never seen: program runs the kernel skipped because the program was already running on that CPU (recursion misses)', () =>
      Number(source.kernel().missed),
    );
    mirror(r, 'sockleak_map_full_total', 'Insertions refused by a full, bounded BPF map', () => Number(source.kernel().mapFull));
    mirror(r, 'sockleak_evictions_total', 'Leaks dropped from the agent state at --max-sockets (oldest first)', () => source.leaks.evictions);
    mirror(r, 'sockleak_stream_dropped_records_total', 'Records dropped for slow /stream subscribers', source.streamDropped);
    mirror(r, 'sockleak_recording_bytes_total', 'Bytes written to the --record file', source.recordingBytes);
    new Gauge({
      name: 'sockleak_stream_queued_bytes',
      help: 'Bytes waiting in /stream subscriber queues (each bounded by --stream-queue)',
      registers,
      collect() {
        this.set(source.streamQueuedBytes());
      },
    });
    new Gauge({
      name: 'sockleak_stream_subscribers',
      help: 'Connected /stream subscribers',
      registers,
      collect() {
        this.set(source.subscribers());
      },
    });
  }

  /** Counts one record as it passes. */
  observe(record: AgentRecord): void {
    this.records.inc({ type: record.type });
    if (record.type === 'connect-failure' || record.type === 'bind-failure') {
      if (!this.comms.has(record.comm) && this.comms.size < MAX_COMMS) this.comms.add(record.comm);
      this.connectFailures.inc({ errno: record.errno, comm: this.comms.has(record.comm) ? record.comm : 'other' }, record.count);
    }
  }

  /** The text exposition format. */
  async text(): Promise<{ contentType: string; body: string }> {
    this.processes = this.source.leaks.byProcess(this.source.top);
    this.containers = this.source.leaks.byContainer(this.source.top);
    const shown = new Set(this.processes.map((p) => p.pid));
    this.forecasts = this.source.forecasts().filter((f) => f.running && shown.has(String(f.pid)));
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
