/**
 * Replaying a recording: the state at its end, as the live commands would
 * have shown it then. A Snapshot record (all its parts) replaces the set of
 * open leaks; Leak, Resolved and FdClosed records change it; ages are carried
 * forward to the time of the last record.
 *
 * A recording holds one or more sessions (agent runs, each from a Session
 * record on): a new run starts knowing nothing and re-finds the leaks still
 * there, so the leaks open at the end are the last run's; the counts of each
 * run are kept apart (`sessions`), and Counters (totals since an agent
 * started) are summed over the runs. A Session with `rotated` set continues
 * the run before it when that run is the same (FILE.1 read before FILE).
 */
import { fromPortFailure, fromFdClosed, fromPortPressure, fromPorts, fromProcessForecast, fromResolved, fromSocket } from './mapping';
import type { CountersMessage, RecordMessage, SessionMessage } from './messages';
import type { PortFailureRecord, PortPressureRecord, PortsSnapshot, ProcessForecastRecord } from './records';
import { DataError } from '../errors';
import type { SocketInfo } from '../sockets';

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
  /** 0 in recordings made before Counters carried it. */
  missed: bigint;
  evictions: bigint;
  streamDropped: bigint;
}

/** One agent run in a recording. */
export interface ReplaySession {
  /** Unix ms when the agent started; null for records before any Session record (an older recording, a saved /stream). */
  startedMs: number | null;
  pid: number | null;
  host: string;
  version: string;
  thresholdMs: number | null;
  /** Its first records are not in what was read (the file began by rotation: they are in FILE.1). */
  continued: boolean;
  /** Unix ms of its first and last record. */
  firstMs: number;
  lastMs: number;
  records: number;
  leaksReported: number;
  resolved: number;
}

/** What a recording says at its end. */
export interface ReplayResult {
  /** Machine and threshold: the last run's (its Session record, else the Snapshots). */
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
  /** The last fd forecast per pid. */
  forecasts: ProcessForecastRecord[];
  ports: PortsSnapshot | null;
  counters: ReplayCounters | null;
  /** Records lost by the subscriber that saved a /stream (Gap records). */
  gapRecords: number;
  /** The agent runs, in order (one, without a Session record, for an older recording or a saved /stream). */
  sessions: ReplaySession[];
}

const big = (v: string | number): bigint => BigInt(v);

function counters(m: CountersMessage): ReplayCounters {
  return { emitted: big(m.emitted), lost: big(m.lost), mapFull: big(m.mapFull), missed: big(m.missed ?? 0), evictions: big(m.evictions), streamDropped: big(m.streamDropped) };
}

function addCounters(a: ReplayCounters | null, b: ReplayCounters | null): ReplayCounters | null {
  if (!a || !b) return a ?? b;
  return { emitted: a.emitted + b.emitted, lost: a.lost + b.lost, mapFull: a.mapFull + b.mapFull, missed: a.missed + b.missed, evictions: a.evictions + b.evictions, streamDropped: a.streamDropped + b.streamDropped };
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
  private readonly forecasts = new Map<number, ProcessForecastRecord>();
  private ports: PortsSnapshot | null = null;
  /** The current run's last Counters, and the sum of the runs before it. */
  private counters: ReplayCounters | null = null;
  private countersBefore: ReplayCounters | null = null;
  private readonly sessions: ReplaySession[] = [];
  private session: ReplaySession | undefined;

  /** A Session record: a new run, or the same run going on in a file begun by rotation. */
  private startSession(m: SessionMessage, atMs: number): void {
    const startedMs = Number(m.startedUnixMs);
    const current = this.session;
    if (m.rotated && current && current.startedMs === startedMs && current.pid === m.pid) return;
    this.countersBefore = addCounters(this.countersBefore, this.counters);
    this.counters = null;
    this.open = new Map();
    this.pending = undefined;
    this.session = {
      startedMs,
      pid: m.pid,
      host: m.host,
      version: m.version,
      thresholdMs: Number(m.thresholdMs),
      continued: m.rotated,
      firstMs: atMs,
      lastMs: atMs,
      records: 0,
      leaksReported: 0,
      resolved: 0,
    };
    this.sessions.push(this.session);
  }

  /** Applies one record; a DataError (and nothing changed) when it lacks a part it cannot be read without. */
  apply(r: RecordMessage): void {
    if ('leak' in r && r.leak && !r.leak.socket) throw new DataError('a leak record without its socket');
    const atMs = Number(r.timeUnixMs);
    this.records++;
    this.firstMs ??= atMs;
    this.lastMs = Math.max(this.lastMs ?? atMs, atMs);
    if ('session' in r && r.session) this.startSession(r.session, atMs);
    if (!this.session) {
      this.session = { startedMs: null, pid: null, host: '', version: '', thresholdMs: null, continued: false, firstMs: atMs, lastMs: atMs, records: 0, leaksReported: 0, resolved: 0 };
      this.sessions.push(this.session);
    }
    const session = this.session;
    session.records++;
    session.lastMs = Math.max(session.lastMs, atMs);
    if ('session' in r && r.session) {
      this.host = r.session.host || this.host;
      this.thresholdMs = Number(r.session.thresholdMs);
    } else if ('snapshot' in r && r.snapshot) {
      const s = r.snapshot;
      if (this.host === '') this.host = s.host;
      if (session.host === '') session.host = s.host;
      this.thresholdMs = Number(s.thresholdMs);
      session.thresholdMs ??= this.thresholdMs;
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
      session.leaksReported++;
      this.open.delete(socket.cookie);
      this.open.set(socket.cookie, { socket, atMs });
    } else if ('resolved' in r && r.resolved) {
      this.resolved++;
      session.resolved++;
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
    } else if ('processForecast' in r && r.processForecast) {
      const f = fromProcessForecast(r.processForecast);
      this.forecasts.delete(f.pid);
      this.forecasts.set(f.pid, f);
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
      forecasts: [...this.forecasts.values()],
      ports: this.ports,
      counters: addCounters(this.countersBefore, this.counters),
      gapRecords: this.gapRecords,
      sessions: this.sessions.map((s) => ({ ...s })),
    };
  }
}
