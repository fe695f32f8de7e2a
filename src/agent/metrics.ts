/**
 * The agent's Prometheus metrics (prom-client). Values are read from the
 * agent's state when scraped; every label set is bounded: processes and
 * destinations to the top K plus `other`, comms of connect failures to
 * MAX_COMMS plus `other`. docs/agent.md lists them.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { LeakIndex } from './leak-index';
import type { AgentRecord, PortsSnapshot } from './records';
import type { StateCount } from './state-counts';

/** Distinct comm label values of sockleak_connect_failures_total before the rest become `other`. */
export const MAX_COMMS = 64;

/** What the metrics read at scrape time. */
export interface MetricsSource {
  leaks: LeakIndex;
  /** Top K for per-process and per-destination series. */
  top: number;
  /** The latest per-state counts (from the last periodic scan). */
  stateCounts(): readonly StateCount[];
  /** The latest ports report; undefined while there is none (or no port tracking). */
  ports(): PortsSnapshot | undefined;
  /** The kernel side's totals. */
  kernel(): { emitted: bigint; lost: bigint; mapFull: bigint };
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

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly records: Counter<'type'>;
  private readonly connectFailures: Counter<'errno' | 'comm'>;
  private readonly comms = new Set<string>();

  constructor(source: MetricsSource) {
    const r = this.registry;
    // The event-loop lag histogram samples once a second: at prom-client's default (every 10 ms)
    // the sampler alone woke the agent 100 times a second, ~1% of a core while idle.
    collectDefaultMetrics({ register: r, eventLoopMonitoringPrecision: 1000 });
    const registers = [r];
    new Gauge({
      name: 'sockleak_sockets',
      help: 'TCP sockets by state and network namespace (inode), from the last periodic scan',
      labelNames: ['state', 'netns'] as const,
      registers,
      collect() {
        this.reset();
        for (const c of source.stateCounts()) this.set({ state: c.state, netns: String(c.netns) }, c.count);
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
    new Gauge({
      name: 'sockleak_close_wait_leaked_by_process',
      help: 'Leaked CLOSE_WAIT sockets per holding process: the top K processes, the rest summed as pid="other"',
      labelNames: ['pid', 'comm'] as const,
      registers,
      collect() {
        this.reset();
        for (const p of source.leaks.byProcess(source.top)) this.set({ pid: p.pid, comm: p.comm }, p.count);
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
    this.connectFailures = new Counter({
      name: 'sockleak_connect_failures_total',
      help: `connect() failures with EADDRNOTAVAIL (and bind() with EADDRINUSE) by errno and comm (${MAX_COMMS} comms, then "other")`,
      labelNames: ['errno', 'comm'] as const,
      registers,
    });
    this.records = new Counter({
      name: 'sockleak_records_total',
      help: 'Records produced by the agent, by type (leak, resolved, fd-closed, connect-failure, port-pressure)',
      labelNames: ['type'] as const,
      registers,
    });
    mirror(r, 'sockleak_events_total', 'Events the kernel wrote to the ring buffer', () => Number(source.kernel().emitted));
    mirror(r, 'sockleak_lost_events_total', 'Events lost: ring buffer full, or a slow reader', () => Number(source.kernel().lost));
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
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
