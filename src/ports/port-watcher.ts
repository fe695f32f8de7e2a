/**
 * Ephemeral-port exhaustion, live: the engine behind the connect-failure and
 * port-pressure records of `sockleak watch`.
 *
 * The leak-mode tracer already does the kernel side: it sends every connect()
 * that fails with EADDRNOTAVAIL (and bind() with EADDRINUSE) to the ring, which
 * the LeakWatcher hands to onPortEvent(), and it counts active closes per
 * (process, netns, destination) in a map this class reads once per interval and
 * turns into rates. Sockets are not followed one by one: when the recent closes
 * to a destination could fill half its range, or connect() failed, the socket
 * table of that namespace is scanned and the ports counted (port-usage.ts); every
 * `scanMs` the kernel counts the ports each namespace holds (a census, nothing
 * decoded per socket), and only a namespace that could be short is scanned.
 */
import { monotonicNowNs } from '../clock';
import { UsageError } from '../errors';
import type { BindEvent, ConnectEvent } from '../events';
import { decodeActiveCloses } from './port-closes';
import { pressureRecord, type PortCloser, type PortPressureRecord } from './port-pressure';
import { readPortSysctls, type PortSysctls } from './port-sysctls';
import { portUsage, splitEndpoint, twReuseApplies, type NetnsPorts } from './port-usage';
import { TIME_WAIT_MS } from '../tcp-states';
import { networkNamespaces, SocketScanner } from '../scan/scan';
import type { SocketInfo } from '../sockets';

/** connect() failed with EADDRNOTAVAIL (or bind() with EADDRINUSE), aggregated per interval per process and address. */
export interface PortFailureRecord {
  type: 'connect-failure' | 'bind-failure';
  pid: number;
  /** The thread of the last failure in the interval. */
  tid: number;
  comm: string;
  /** The address connect() asked for; for bind(), the local address asked for. */
  remote: string;
  errno: 'EADDRNOTAVAIL' | 'EADDRINUSE';
  /** Failures in the interval (one second by default). */
  count: number;
  netns: number;
}

/** What the port watcher reports. */
export type PortRecord = PortFailureRecord | PortPressureRecord;

export interface PortWatchOptions {
  /** Only failures of this process, and pressure on destinations it closes to or fails on. */
  pid?: number;
  /** Aggregation period of failure records and of rate sampling, ms. Default 1000. */
  intervalMs?: number;
  /** Share of a destination's usable ports in use that raises port-pressure, in (0, 1]. Default 0.8. */
  pressureRatio?: number;
  /** How often every namespace's ports are counted even without a hot destination, ms. Default 30 s. */
  scanMs?: number;
  btfPath?: string;
}

/** Where the watcher gets its data and sends its records (wired up by port-watch.ts). */
export interface PortWatchSink {
  /** The tracer's raw active_closes map (LeakWatcher.activeCloses()). */
  activeCloses: () => Buffer;
  emit: (record: PortRecord) => void;
  /** A scan or read failed; the watcher stops sampling. */
  fail: (err: unknown) => void;
}

interface Sample {
  tNs: number;
  count: number;
}

interface CloserHistory {
  netns: number;
  pid: number;
  comm: string;
  remote: string;
  /** Cumulative counts; a flat run is kept as its two ends. */
  samples: Sample[];
}

const RATE_WINDOW_NS = 5e9;
const FAILURE_WINDOW_NS = 10e9;
const TIME_WAIT_NS = TIME_WAIT_MS * 1e6;
const SYSCTL_TTL_NS = 30e9;
/** A periodic check evaluates only namespaces whose sockets hold at least this many ephemeral ports (or hot ones). */
const MIN_PORTS_USED = 64;

function validate(o: PortWatchOptions): void {
  for (const [name, v, min] of [
    ['intervalMs', o.intervalMs, 100],
    ['scanMs', o.scanMs, 1000],
  ] as const) {
    if (v !== undefined && (!Number.isSafeInteger(v) || v < min)) throw new UsageError(`${name} must be an integer >= ${min}, got ${v}`);
  }
  const r = o.pressureRatio;
  if (r !== undefined && !(r > 0 && r <= 1)) throw new UsageError(`pressureRatio must be in (0, 1], got ${r}`);
}

/** The count a history had at time `tNs` (its oldest sample if it starts later). */
function countAt(samples: readonly Sample[], tNs: number): Sample {
  let at = samples[0]!;
  for (const s of samples) if (s.tNs <= tNs) at = s;
  return at;
}

/** Live port-exhaustion detection fed by a leak-mode tracer; see PortAwareWatcher for the iterable. */
export class PortWatcher {
  private readonly scanner: SocketScanner;
  private readonly ratio: number;
  private readonly intervalNs: number;
  private readonly scanNs: number;
  private readonly failures = new Map<string, PortFailureRecord>();
  /** Destination (`netns|remote`) -> EADDRNOTAVAIL counts per flushed interval, last 10 s. */
  private readonly recentFailures = new Map<string, Sample[]>();
  /** `netns|remote|pid` -> active-close history, last 60 s (a TIME_WAIT's life). */
  private readonly closes = new Map<string, CloserHistory>();
  private readonly sysctls = new Map<number, { value: PortSysctls | undefined; atNs: number }>();
  private namespaces = new Map<number, string>();
  /** Destinations reported under pressure; re-armed when they fall 10 points below the ratio. */
  private readonly pressured = new Set<string>();
  private readonly timer: NodeJS.Timeout;
  private lastSampleNs = monotonicNowNs();
  private lastScanNs = 0;
  /** How long the last scan took: hot scans are spaced to take at most ~1/3 of the time, periodic ones ~1/10. */
  private scanCostNs = 0;
  private sampling: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly options: PortWatchOptions,
    private readonly sink: PortWatchSink,
  ) {
    validate(options);
    this.ratio = options.pressureRatio ?? 0.8;
    this.intervalNs = (options.intervalMs ?? 1000) * 1e6;
    this.scanNs = (options.scanMs ?? 30_000) * 1e6;
    this.scanner = new SocketScanner(options.btfPath !== undefined ? { btfPath: options.btfPath } : {});
    this.timer = setInterval(() => this.tick(), options.intervalMs ?? 1000);
  }

  /** A connect()/bind() failure from the ring (LeakWatcher's onPortEvent). */
  onPortEvent(ev: ConnectEvent | BindEvent): void {
    if (this.options.pid !== undefined && ev.pid !== this.options.pid) return;
    const errno = ev.ret === -99 ? 'EADDRNOTAVAIL' : ev.ret === -98 ? 'EADDRINUSE' : undefined;
    if (!errno) return;
    const type = ev.type === 'connect' ? 'connect-failure' : 'bind-failure';
    const key = `${type}|${ev.netns}|${ev.pid}|${ev.remote}|${errno}`;
    const record = this.failures.get(key);
    if (record) {
      record.count++;
      record.tid = ev.tid;
    } else {
      this.failures.set(key, { type, pid: ev.pid, tid: ev.tid, comm: ev.comm, remote: ev.remote, errno, count: 1, netns: ev.netns });
    }
  }

  private tick(): void {
    const nowNs = monotonicNowNs();
    this.flushFailures(nowNs);
    if (this.sampling || this.closed) return; // the previous sample is still scanning
    this.sampling = this.sample(nowNs)
      .catch((err: unknown) => {
        clearInterval(this.timer);
        this.sink.fail(err);
      })
      .finally(() => (this.sampling = undefined));
  }

  private flushFailures(nowNs: number): void {
    for (const record of this.failures.values()) {
      if (record.type === 'connect-failure' && record.errno === 'EADDRNOTAVAIL') {
        const dest = `${record.netns}|${record.remote}`;
        this.recentFailures.set(dest, [...(this.recentFailures.get(dest) ?? []), { tNs: nowNs, count: record.count }]);
      }
      this.sink.emit(record);
    }
    this.failures.clear();
    for (const [dest, samples] of this.recentFailures) {
      const recent = samples.filter((s) => s.tNs > nowNs - FAILURE_WINDOW_NS);
      if (recent.length) this.recentFailures.set(dest, recent);
      else this.recentFailures.delete(dest);
    }
  }

  private async sample(nowNs: number): Promise<void> {
    this.recordCloses(nowNs);
    const hot = await this.hotNetns(nowNs);
    const gapNs = hot.size ? Math.max(this.intervalNs, 2 * this.scanCostNs) : Math.max(this.scanNs, 10 * this.scanCostNs);
    if (nowNs - this.lastScanNs < gapNs) return;
    this.lastScanNs = nowNs;
    this.namespaces = networkNamespaces();
    for (const dest of this.pressured) {
      if (!this.namespaces.has(Number(dest.split('|')[0]))) this.pressured.delete(dest); // the namespace is gone
    }
    // Hot namespaces are scanned socket by socket; the others only if the kernel's census says they could be short.
    const scanned: Array<{ netns: number; sockets: SocketInfo[] }> = [];
    for (const [netns, path] of this.namespaces) {
      if (this.closed) return;
      if (!hot.has(netns) && !(await this.mayBeShort(netns, path, nowNs))) continue;
      const sockets = await this.scanner.scanNetns(path);
      if (sockets) scanned.push({ netns, sockets });
    }
    const scannedNs = monotonicNowNs();
    this.scanCostNs = scannedNs - nowNs;
    this.recordCloses(scannedNs); // the closes that made the TIME_WAIT this scan found
    for (const { netns, sockets } of scanned) {
      const sysctls = await this.sysctlsOf(netns, nowNs);
      if (sysctls && !this.closed) this.evaluate(portUsage(netns, sockets, sysctls), sysctls, scannedNs);
    }
  }

  /**
   * Whether a destination of this namespace could be at the pressure ratio, from
   * the kernel's port census: no destination uses more ports than the namespace's
   * sockets hold in all, and connect() has at least the range minus reserved and
   * listening ports. Below MIN_PORTS_USED nothing is evaluated at all.
   */
  private async mayBeShort(netns: number, path: string, nowNs: number): Promise<boolean> {
    const census = await this.scanner.census(netns, path);
    if (!census || census.portsUsed < MIN_PORTS_USED) return false;
    const sysctls = await this.sysctlsOf(netns, nowNs);
    if (!sysctls) return false;
    const fewestUsable = portUsage(netns, [], sysctls).usablePorts - census.listeningPorts;
    return census.portsUsed >= this.ratio * fewestUsable;
  }

  /** Reads the cumulative active-close counts and appends them to each history. */
  private recordCloses(nowNs: number): void {
    const previousNs = this.lastSampleNs;
    this.lastSampleNs = nowNs;
    for (const e of decodeActiveCloses(this.sink.activeCloses())) {
      if (this.options.pid !== undefined && e.pid !== this.options.pid) continue;
      const key = `${e.netns}|${e.remote}|${e.pid}`;
      let h = this.closes.get(key);
      // Absent at the previous read: its count was 0 then (the map starts empty and is never pruned).
      if (!h) {
        h = { netns: e.netns, pid: e.pid, comm: e.comm, remote: e.remote, samples: [{ tNs: previousNs, count: 0 }] };
        this.closes.set(key, h);
      }
      const s = h.samples;
      const last = s[s.length - 1]!;
      const beforeLast = s[s.length - 2];
      if (last.count === e.count && beforeLast?.count === e.count) last.tNs = nowNs;
      else s.push({ tNs: nowNs, count: e.count });
      while (s.length > 1 && s[1]!.tNs <= nowNs - TIME_WAIT_NS) s.shift();
    }
  }

  private rateOf(h: CloserHistory, nowNs: number): number {
    const last = h.samples[h.samples.length - 1]!;
    const ref = countAt(h.samples, nowNs - RATE_WINDOW_NS);
    return last.tNs > ref.tNs ? ((last.count - ref.count) * 1e9) / (last.tNs - ref.tNs) : 0;
  }

  /** Active closes in the last 60 s: about the TIME_WAIT sockets they left. */
  private closesInTimeWait(h: CloserHistory, nowNs: number): number {
    return h.samples[h.samples.length - 1]!.count - countAt(h.samples, nowNs - TIME_WAIT_NS).count;
  }

  /**
   * Namespaces worth a scan now: recent failures, standing pressure, or recent
   * active closes to a destination that could fill half its range — unless
   * tcp_tw_reuse lets connect() take their TIME_WAIT over.
   */
  private async hotNetns(nowNs: number): Promise<Set<number>> {
    const hot = new Set<number>();
    for (const dest of [...this.recentFailures.keys(), ...this.pressured]) hot.add(Number(dest.split('|')[0]));
    const recent = new Map<string, { netns: number; remote: string; n: number }>();
    for (const h of this.closes.values()) {
      const dest = `${h.netns}|${h.remote}`;
      const entry = recent.get(dest) ?? { netns: h.netns, remote: h.remote, n: 0 };
      entry.n += this.closesInTimeWait(h, nowNs);
      recent.set(dest, entry);
    }
    for (const { netns, remote, n } of recent.values()) {
      if (n === 0 || hot.has(netns)) continue;
      const sysctls = await this.sysctlsOf(netns, nowNs);
      if (!sysctls || twReuseApplies(sysctls, '', splitEndpoint(remote).host)) continue;
      if (n >= (this.ratio / 2) * portUsage(netns, [], sysctls).usablePorts) hot.add(netns);
    }
    return hot;
  }

  private async sysctlsOf(netns: number, nowNs: number): Promise<PortSysctls | undefined> {
    const cached = this.sysctls.get(netns);
    if (cached && nowNs - cached.atNs < SYSCTL_TTL_NS) return cached.value;
    if (!this.namespaces.has(netns)) this.namespaces = networkNamespaces();
    const path = this.namespaces.get(netns);
    const value = path === undefined ? undefined : await readPortSysctls(path);
    this.sysctls.set(netns, { value, atNs: nowNs });
    return value;
  }

  private closersOf(netns: number, remote: string, nowNs: number): PortCloser[] {
    const closers: PortCloser[] = [];
    for (const h of this.closes.values()) {
      if (h.netns !== netns || h.remote !== remote || this.closesInTimeWait(h, nowNs) === 0) continue;
      closers.push({ pid: h.pid, comm: h.comm, ratePerSec: Math.round(this.rateOf(h, nowNs) * 10) / 10 });
    }
    return closers.sort((a, b) => b.ratePerSec - a.ratePerSec);
  }

  /** Emits port-pressure for destinations that crossed the ratio since the last evaluation. */
  private evaluate(ns: NetnsPorts, sysctls: PortSysctls, nowNs: number): void {
    const seen = new Set<string>();
    for (const r of ns.byRemote) {
      const dest = `${ns.netns}|${r.remote}`;
      seen.add(dest);
      const ratio = ns.usablePorts > 0 ? r.used / ns.usablePorts : 1;
      if (this.pressured.has(dest)) {
        if (ratio < this.ratio - 0.1) this.pressured.delete(dest);
        continue;
      }
      if (ratio < this.ratio) continue;
      const closers = this.closersOf(ns.netns, r.remote, nowNs);
      const failures = (this.recentFailures.get(dest) ?? []).reduce((n, s) => n + s.count, 0);
      if (this.options.pid !== undefined && closers.length === 0 && failures === 0) continue;
      this.pressured.add(dest);
      this.sink.emit(pressureRecord(ns, r, sysctls, closers, failures));
    }
    for (const dest of this.pressured) if (dest.startsWith(`${ns.netns}|`) && !seen.has(dest)) this.pressured.delete(dest);
  }

  /** Stops sampling; emits the failures of the last partial interval. Call after the tracer delivered its last events. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    await this.sampling;
    this.flushFailures(monotonicNowNs());
    this.scanner.close();
  }
}
