/**
 * Replaying a recording: the state at its end, as the live commands would
 * have shown it then. A Snapshot record (all its parts) replaces the set of
 * open leaks; Leak, Resolved and FdClosed records change it; ages are carried
 * forward to the time of the last record.
 */
import { fromPortFailure, fromFdClosed, fromPortPressure, fromPorts, fromResolved, fromSocket } from './agent/mapping';
import type { CountersMessage, RecordMessage } from './agent/messages';
import type { PortFailureRecord, PortPressureRecord, PortsSnapshot } from './agent/records';
import { DataError } from './errors';
import type { SocketInfo } from './sockets';

interface Open {
  socket: SocketInfo;
  /** Unix ms of the record that gave `socket.stateAgeMs`. */
  atMs: number;
}

/** A connect()/bind() failure summed over a recording. */
export interface FailureTotal {
  type: PortFailureRecord['type'];
  pid: number;
  comm: string;
  remote: string;
  errno: string;
  netns: number;
  count: number;
}

/** Totals as of the last Counters record. */
export interface ReplayCounters {
  emitted: bigint;
  lost: bigint;
  mapFull: bigint;
  evictions: bigint;
  streamDropped: bigint;
}

/** What a recording says at its end. */
export interface ReplayResult {
  /** Machine and threshold, from the first Snapshot. */
  host: string;
  thresholdMs: number | null;
  /** Unix ms of the first and last record; null when there is none. */
  firstMs: number | null;
  lastMs: number | null;
  records: number;
  /** Records of a kind this version does not know (skipped). */
  unknown: number;
  /** Leak records seen, and Resolved records. */
  leaksReported: number;
  resolved: number;
  /** Leaks open at the end, ages as of `lastMs`, oldest first. */
  leaks: SocketInfo[];
  connectFailures: FailureTotal[];
  /** The last port-pressure record per (netns, remote). */
  portPressure: PortPressureRecord[];
  ports: PortsSnapshot | null;
  counters: ReplayCounters | null;
  /** Records lost by the subscriber that saved a /stream (Gap records). */
  gapRecords: number;
}

const big = (v: string | number): bigint => BigInt(v);

function counters(m: CountersMessage): ReplayCounters {
  return { emitted: big(m.emitted), lost: big(m.lost), mapFull: big(m.mapFull), evictions: big(m.evictions), streamDropped: big(m.streamDropped) };
}

/** Feed records in order with apply(); result() any time. */
export class Replay {
  private host = '';
  private thresholdMs: number | null = null;
  private firstMs: number | null = null;
  private lastMs: number | null = null;
  private records = 0;
  private unknown = 0;
  private leaksReported = 0;
  private resolved = 0;
  private gapRecords = 0;
  private open = new Map<string, Open>();
  /** Parts of a Snapshot still arriving. */
  private pending: Map<string, Open> | undefined;
  private readonly failures = new Map<string, FailureTotal>();
  private readonly pressure = new Map<string, PortPressureRecord>();
  private ports: PortsSnapshot | null = null;
  private counters: ReplayCounters | null = null;

  /** Applies one record; a DataError (and nothing changed) when it lacks a part it cannot be read without. */
  apply(r: RecordMessage): void {
    if ('leak' in r && r.leak && !r.leak.socket) throw new DataError('a leak record without its socket');
    const atMs = Number(r.timeUnixMs);
    this.records++;
    this.firstMs ??= atMs;
    this.lastMs = Math.max(this.lastMs ?? atMs, atMs);
    if ('snapshot' in r && r.snapshot) {
      const s = r.snapshot;
      if (this.records === 1 || this.host === '') this.host = s.host;
      this.thresholdMs ??= Number(s.thresholdMs);
      if (s.part === 0 || !this.pending) this.pending = new Map();
      for (const m of s.sockets) {
        const socket = fromSocket(m);
        this.pending.set(socket.cookie, { socket, atMs });
      }
      if (!s.more) {
        this.open = this.pending;
        this.pending = undefined;
      }
    } else if ('leak' in r && r.leak?.socket) {
      const socket = fromSocket(r.leak.socket);
      this.leaksReported++;
      this.open.delete(socket.cookie);
      this.open.set(socket.cookie, { socket, atMs });
    } else if ('resolved' in r && r.resolved) {
      this.resolved++;
      this.open.delete(fromResolved(r.resolved).cookie);
    } else if ('fdClosed' in r && r.fdClosed) {
      const f = fromFdClosed(r.fdClosed);
      const o = this.open.get(f.cookie);
      if (o) o.socket.owners = f.stillHeldBy;
    } else if ('connectFailure' in r && r.connectFailure) {
      this.addFailure(fromPortFailure(r.connectFailure));
    } else if ('portPressure' in r && r.portPressure) {
      const p = fromPortPressure(r.portPressure);
      this.pressure.set(`${p.netns}|${p.remote}`, p);
    } else if ('ports' in r && r.ports) {
      this.ports = fromPorts(r.ports);
    } else if ('counters' in r && r.counters) {
      this.counters = counters(r.counters);
    } else if ('gap' in r && r.gap) {
      this.gapRecords += Number(r.gap.droppedRecords);
    } else {
      this.unknown++;
    }
  }

  private addFailure(f: PortFailureRecord): void {
    const key = `${f.type}|${f.pid}|${f.remote}|${f.errno}|${f.netns}`;
    const t = this.failures.get(key);
    if (t) t.count += f.count;
    else this.failures.set(key, { type: f.type, pid: f.pid, comm: f.comm, remote: f.remote, errno: f.errno, netns: f.netns, count: f.count });
  }

  result(): ReplayResult {
    const end = this.lastMs ?? 0;
    const leaks = [...this.open.values()].map(({ socket, atMs }) => ({
      ...socket,
      stateAgeMs: socket.stateAgeMs === null ? null : socket.stateAgeMs + Math.max(0, end - atMs),
    }));
    leaks.sort((a, b) => (b.stateAgeMs ?? 0) - (a.stateAgeMs ?? 0));
    return {
      host: this.host,
      thresholdMs: this.thresholdMs,
      firstMs: this.firstMs,
      lastMs: this.lastMs,
      records: this.records,
      unknown: this.unknown,
      leaksReported: this.leaksReported,
      resolved: this.resolved,
      leaks,
      connectFailures: [...this.failures.values()].sort((a, b) => b.count - a.count),
      portPressure: [...this.pressure.values()],
      ports: this.ports,
      counters: this.counters,
      gapRecords: this.gapRecords,
    };
  }
}
