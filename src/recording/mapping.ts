/**
 * The one mapping between sockleak's TypeScript records (what `--json`
 * prints) and proto/sockleak.proto's messages (what /stream and recordings
 * carry). Both directions live here so that they cannot drift apart:
 * toBody() for the agent, fromSocket()/fromPorts()/... for `sockleak report`.
 *
 * Cookies: decimal strings in TypeScript and JSON, uint64 on the wire.
 * null in TypeScript is an absent field on the wire.
 *
 * Longer than 400 lines because every record's two directions stay side by
 * side: a field added to the schema is then a change to this file alone.
 */
import type { Closer, FdClosedRecord, ResolvedRecord } from '../watch-records';
import type { Creator, Frame, Owner, SocketInfo, Snapshot } from '../sockets';
import type { TcpState } from '../tcp-states';
import { TCP_STATES } from '../tcp-states';
import type {
  CloserMessage,
  ConnectFailureCall,
  ConnectFailureMessage,
  CountersMessage,
  NetnsPortsMessage,
  OwnerMessage,
  PortPressureMessage,
  PortsMessage,
  ProcessForecastMessage,
  RecordBody,
  RemotePortsMessage,
  ResolvedHow,
  SnapshotMessage,
  SocketInfoMessage,
  TcpStateWire,
  U64,
  CreatorMessage,
  FrameMessage,
} from './messages';
import type { AgentRecord, NetnsPorts, PortFailureRecord, PortPressureRecord, PortsSnapshot, ProcessForecastRecord, RemotePorts } from './records';

/** Totals carried by a Counters record. */
export interface AgentCounters {
  emitted: bigint;
  lost: bigint;
  mapFull: bigint;
  /** Program runs the kernel skipped (recursion misses): events never seen. */
  missed: bigint;
  evictions: number;
  streamDropped: number;
}

/** What a Snapshot record says besides its sockets. */
export interface SnapshotMeta {
  part: number;
  more: boolean;
  thresholdMs: number;
  host: string;
}

const HOW_TO_WIRE: Record<ResolvedRecord['how'], ResolvedHow> = { close: 'HOW_CLOSE', exit: 'HOW_EXIT', peer: 'HOW_PEER', gone: 'HOW_GONE' };
const HOW_FROM_WIRE: Record<ResolvedHow, ResolvedRecord['how']> = {
  HOW_UNSPECIFIED: 'gone',
  HOW_CLOSE: 'close',
  HOW_EXIT: 'exit',
  HOW_PEER: 'peer',
  HOW_GONE: 'gone',
};

/** TCP_STATE_CLOSE_WAIT ↔ CLOSE_WAIT; sockleak's UNKNOWN is the enum's zero value. */
const stateToWire = (s: TcpState): TcpStateWire => (s === 'UNKNOWN' ? 'TCP_STATE_UNSPECIFIED' : `TCP_STATE_${s}`);

/** Absent on the wire for null. */
const opt = <T>(v: T | null): T | undefined => (v === null ? undefined : v);
/** null in TypeScript for an absent (or null: protobufjs's default for message fields) wire field. */
/** A creator on the wire: frames' addresses as u64 (decimal strings keep all 64 bits). */
function toCreator(c: Creator): CreatorMessage {
  const frame = (f: Frame): FrameMessage => ({
    addr: BigInt(f.addr).toString(),
    symbol: f.symbol,
    ...(f.file !== undefined && { file: f.file }),
    ...(f.line !== undefined && { line: f.line }),
    module: f.module,
  });
  return { pid: c.pid, tid: c.tid, comm: c.comm, ...toPlace(c), stack: (c.stack ?? []).map(frame), stackTruncated: c.stackTruncated ?? false };
}

function fromCreator(m: CreatorMessage): Creator {
  const creator: Creator = { pid: m.pid, tid: m.tid, comm: m.comm, ...toPlace(m) };
  if (m.stack.length > 0) {
    creator.stack = m.stack.map((f) => ({
      addr: `0x${BigInt(f.addr).toString(16)}`,
      symbol: f.symbol,
      ...(f.file !== undefined && { file: f.file }),
      ...(f.line !== undefined && { line: f.line }),
      module: f.module,
    }));
    creator.stackTruncated = m.stackTruncated;
  }
  return creator;
}

const num = (v: U64 | null | undefined): number | null => (v === undefined || v === null ? null : Number(v));

function toOwner(o: Owner): OwnerMessage {
  return { pid: o.pid, comm: o.comm, fd: o.fd, ...toPlace(o) };
}

/** An owner's or creator's cgroup fields, set only where known (they round-trip as absent). */
function toPlace(p: { cgroup?: string; containerId?: string; podUid?: string }): { cgroup?: string; containerId?: string; podUid?: string } {
  return {
    ...(p.cgroup !== undefined && { cgroup: p.cgroup }),
    ...(p.containerId !== undefined && { containerId: p.containerId }),
    ...(p.podUid !== undefined && { podUid: p.podUid }),
  };
}

function toCloser(c: Closer): CloserMessage {
  return { pid: c.pid, tid: c.tid, comm: c.comm, ...(c.fd !== null && { fd: c.fd }) };
}

/** SocketInfo → wire. Extra properties (a leak record's `type`) are not carried. */
export function toSocket(s: SocketInfo): SocketInfoMessage {
  return {
    cookie: s.cookie,
    state: stateToWire(s.state),
    family: s.family,
    local: s.local,
    remote: s.remote,
    netns: s.netns,
    owners: s.owners.map(toOwner),
    ...(s.creator && { creator: toCreator(s.creator) }),
    recvQ: s.recvQ,
    sendQ: s.sendQ,
    keepalive: s.keepalive,
    keepaliveProbeInMs: opt(s.keepaliveProbeInMs),
    keepaliveReapByMs: opt(s.keepaliveReapByMs),
    stateAgeMs: opt(s.stateAgeMs),
    ageEstimated: s.ageEstimated,
    uid: s.uid,
  };
}

/** A Snapshot record of `sockets` (one part of it when it is split). */
export function toSnapshot(snapshot: Snapshot, meta: SnapshotMeta): SnapshotMessage {
  return {
    takenAt: snapshot.takenAt,
    sockets: snapshot.sockets.map(toSocket),
    lost: snapshot.lost,
    part: meta.part,
    more: meta.more,
    thresholdMs: meta.thresholdMs,
    host: meta.host,
  };
}

function toRemotePorts(r: RemotePorts): RemotePortsMessage {
  return {
    remote: r.remote,
    timeWait: r.timeWait,
    established: r.established,
    other: r.other,
    free: r.free,
    used: r.used,
    nextFreeInMs: opt(r.nextFreeInMs),
  };
}

function toNetnsPorts(n: NetnsPorts): NetnsPortsMessage {
  return {
    netns: n.netns,
    portRangeLow: n.portRange[0],
    portRangeHigh: n.portRange[1],
    usablePorts: n.usablePorts,
    reservedPorts: n.reservedPorts,
    boundPorts: n.boundPorts,
    twReuse: n.twReuse,
    timeWait: n.timeWait,
    established: n.established,
    byRemote: n.byRemote.map(toRemotePorts),
    bySource: n.bySource.map((b) => ({ source: b.source, timeWait: b.timeWait, established: b.established })),
  };
}

/** Ports snapshot (`sockleak ports --json`) → wire. */
export function toPorts(p: PortsSnapshot): PortsMessage {
  return { takenAt: p.takenAt, netns: p.netns.map(toNetnsPorts) };
}

/** Counters → wire. */
export function toCounters(c: AgentCounters): CountersMessage {
  return {
    emitted: c.emitted.toString(),
    lost: c.lost.toString(),
    mapFull: c.mapFull.toString(),
    missed: c.missed.toString(),
    evictions: c.evictions,
    streamDropped: c.streamDropped,
  };
}

function toPortFailure(r: PortFailureRecord): ConnectFailureMessage {
  return {
    pid: r.pid,
    tid: r.tid,
    comm: r.comm,
    remote: r.remote,
    errnoName: r.errno,
    count: r.count,
    netns: r.netns,
    call: (r.type === 'bind-failure' ? 'CALL_BIND' : 'CALL_CONNECT') satisfies ConnectFailureCall,
  };
}

function toPortPressure(r: PortPressureRecord): PortPressureMessage {
  return {
    netns: r.netns,
    remote: r.remote,
    timeWait: r.timeWait,
    established: r.established,
    free: r.free,
    usable: r.usable,
    portRangeLow: r.range[0],
    portRangeHigh: r.range[1],
    twReuse: r.twReuse,
    ratePerSec: r.ratePerSec,
    closers: r.closers.map((c) => ({ pid: c.pid, comm: c.comm, ratePerSec: c.ratePerSec })),
    recentFailures: r.recentFailures,
    ...(r.exhaustInSec !== null && { exhaustInSec: r.exhaustInSec }),
    nextFreeInMs: opt(r.nextFreeInMs),
    forecast: r.forecast,
    remedies: [...r.remedies],
  };
}

function toProcessForecast(r: ProcessForecastRecord): ProcessForecastMessage {
  return {
    pid: r.pid,
    comm: r.comm,
    leaksPerHour: opt(r.leaksPerHour),
    leaksInWindow: r.leaksInWindow,
    windowMs: r.windowMs,
    openFds: opt(r.openFds),
    fdLimit: opt(r.fdLimit),
    exhaustInSec: opt(r.exhaustInSec),
    firstLeakUnixMs: Date.parse(r.firstLeakAt),
    firstLeakEstimated: r.firstLeakEstimated,
    running: r.running,
    forecast: r.forecast,
  };
}

/** A record from the leak engine, the port tracker or the fd forecaster → the Record body that carries it. */
export function toBody(record: AgentRecord): RecordBody {
  switch (record.type) {
    case 'leak':
      return { leak: { socket: toSocket(record) } };
    case 'resolved':
      return {
        resolved: {
          cookie: record.cookie,
          local: record.local,
          remote: record.remote,
          ...(record.closedBy && { closedBy: toCloser(record.closedBy) }),
          how: HOW_TO_WIRE[record.how],
          heldMs: record.heldMs,
        },
      };
    case 'fd-closed':
      return {
        fdClosed: {
          cookie: record.cookie,
          remote: record.remote,
          closedBy: toCloser(record.closedBy),
          stillHeldBy: record.stillHeldBy.map(toOwner),
        },
      };
    case 'connect-failure':
    case 'bind-failure':
      return { connectFailure: toPortFailure(record) };
    case 'port-pressure':
      return { portPressure: toPortPressure(record) };
    case 'forecast':
      return { processForecast: toProcessForecast(record) };
  }
}

// ---- wire → TypeScript (sockleak report) ----

function fromOwner(o: OwnerMessage): Owner {
  return { pid: o.pid, comm: o.comm, fd: o.fd, ...toPlace(o) };
}

function fromCloser(c: CloserMessage): Closer {
  return { pid: c.pid, tid: c.tid, comm: c.comm, fd: c.fd ?? null };
}

/** A state this schema does not name (decoded as its number) reads as UNKNOWN. */
function fromState(wire: TcpStateWire | number): TcpState {
  if (typeof wire === 'number') return 'UNKNOWN';
  const bare = wire.slice('TCP_STATE_'.length);
  return (TCP_STATES as readonly string[]).includes(bare) ? (bare as TcpState) : 'UNKNOWN';
}

/** Wire → SocketInfo, exactly what `snapshot --json` prints for it. */
export function fromSocket(m: SocketInfoMessage): SocketInfo {
  return {
    cookie: String(m.cookie),
    state: fromState(m.state),
    family: m.family === 6 ? 6 : 4,
    local: m.local,
    remote: m.remote,
    netns: m.netns,
    owners: m.owners.map(fromOwner),
    creator: m.creator ? fromCreator(m.creator) : null,
    recvQ: m.recvQ,
    sendQ: m.sendQ,
    keepalive: m.keepalive,
    keepaliveProbeInMs: num(m.keepaliveProbeInMs),
    keepaliveReapByMs: num(m.keepaliveReapByMs),
    stateAgeMs: num(m.stateAgeMs),
    ageEstimated: m.ageEstimated,
    uid: m.uid,
  };
}

/** Wire → resolved record. */
export function fromResolved(m: Extract<RecordBody, { resolved: unknown }>['resolved']): ResolvedRecord {
  return {
    type: 'resolved',
    cookie: String(m.cookie),
    local: m.local,
    remote: m.remote,
    closedBy: m.closedBy ? fromCloser(m.closedBy) : null,
    how: typeof m.how === 'number' ? 'gone' : HOW_FROM_WIRE[m.how],
    heldMs: Number(m.heldMs),
  };
}

/** Wire → fd-closed record. */
export function fromFdClosed(m: Extract<RecordBody, { fdClosed: unknown }>['fdClosed']): FdClosedRecord {
  return {
    type: 'fd-closed',
    cookie: String(m.cookie),
    remote: m.remote,
    closedBy: m.closedBy ? fromCloser(m.closedBy) : { pid: 0, tid: 0, comm: '', fd: null },
    stillHeldBy: m.stillHeldBy.map(fromOwner),
  };
}

const twReuse = (n: number): 0 | 1 | 2 => (n === 1 || n === 2 ? n : 0);

/** Wire → connect-failure or bind-failure record. */
export function fromPortFailure(m: ConnectFailureMessage): PortFailureRecord {
  return {
    type: m.call === 'CALL_BIND' ? 'bind-failure' : 'connect-failure',
    pid: m.pid,
    tid: m.tid,
    comm: m.comm,
    remote: m.remote,
    errno: m.errnoName === 'EADDRINUSE' ? 'EADDRINUSE' : 'EADDRNOTAVAIL',
    count: m.count,
    netns: m.netns,
  };
}

/** Wire → port-pressure record. */
export function fromPortPressure(m: PortPressureMessage): PortPressureRecord {
  return {
    type: 'port-pressure',
    netns: m.netns,
    remote: m.remote,
    timeWait: m.timeWait,
    established: m.established,
    free: m.free,
    usable: m.usable,
    range: [m.portRangeLow, m.portRangeHigh],
    twReuse: twReuse(m.twReuse),
    ratePerSec: m.ratePerSec,
    closers: m.closers.map((c) => ({ pid: c.pid, comm: c.comm, ratePerSec: c.ratePerSec })),
    recentFailures: m.recentFailures,
    exhaustInSec: m.exhaustInSec ?? null,
    nextFreeInMs: num(m.nextFreeInMs),
    forecast: m.forecast,
    remedies: [...m.remedies],
  };
}

/** Wire → fd forecast record. */
export function fromProcessForecast(m: ProcessForecastMessage): ProcessForecastRecord {
  return {
    type: 'forecast',
    pid: m.pid,
    comm: m.comm,
    leaksPerHour: m.leaksPerHour ?? null,
    leaksInWindow: m.leaksInWindow,
    windowMs: Number(m.windowMs),
    openFds: m.openFds ?? null,
    fdLimit: num(m.fdLimit),
    exhaustInSec: m.exhaustInSec ?? null,
    firstLeakAt: new Date(num(m.firstLeakUnixMs) ?? 0).toISOString(),
    firstLeakEstimated: m.firstLeakEstimated,
    running: m.running,
    forecast: m.forecast,
  };
}

/** Wire → ports snapshot. */
export function fromPorts(m: PortsMessage): PortsSnapshot {
  return {
    takenAt: m.takenAt,
    netns: m.netns.map((n) => ({
      netns: n.netns,
      portRange: [n.portRangeLow, n.portRangeHigh],
      usablePorts: n.usablePorts,
      reservedPorts: n.reservedPorts,
      boundPorts: n.boundPorts,
      twReuse: twReuse(n.twReuse),
      timeWait: n.timeWait,
      established: n.established,
      byRemote: n.byRemote.map((r) => ({
        remote: r.remote,
        timeWait: r.timeWait,
        established: r.established,
        other: r.other,
        free: r.free,
        used: r.used,
        nextFreeInMs: num(r.nextFreeInMs),
      })),
      bySource: n.bySource.map((b) => ({ source: b.source, timeWait: b.timeWait, established: b.established })),
    })),
  };
}
