/**
 * proto/sockleak.proto's messages as plain objects, the form protobufjs's
 * fromObject() takes and toObject({ longs: String, enums: String }) returns:
 * lowerCamelCase names, 64-bit integers as decimal strings (numbers accepted
 * when encoding), enums by name, unset optional fields absent.
 */
import type { TcpState } from '../tcp-states';

/** A uint64/int64 field: a decimal string when decoded; a string or a safe integer when encoding. */
export type U64 = string | number;

export type OwnerMessage = { pid: number; comm: string; fd: number };
export type CreatorMessage = { pid: number; tid: number; comm: string };
export type CloserMessage = { pid: number; tid: number; comm: string; fd?: number };

export type SocketInfoMessage = {
  cookie: U64;
  state: TcpState;
  family: number;
  local: string;
  remote: string;
  netns: number;
  owners: OwnerMessage[];
  creator?: CreatorMessage;
  recvQ: number;
  sendQ: number;
  keepalive: boolean;
  keepaliveProbeInMs?: U64;
  keepaliveReapByMs?: U64;
  stateAgeMs?: U64;
  ageEstimated: boolean;
  uid: number;
};

export type SnapshotMessage = {
  takenAt: string;
  sockets: SocketInfoMessage[];
  lost: U64;
  part: number;
  more: boolean;
  thresholdMs: U64;
  host: string;
};

export type LeakMessage = { socket: SocketInfoMessage };

export type ResolvedHow = 'HOW_UNSPECIFIED' | 'CLOSE' | 'EXIT' | 'PEER' | 'GONE';

export type ResolvedMessage = {
  cookie: U64;
  local: string;
  remote: string;
  closedBy?: CloserMessage;
  how: ResolvedHow;
  heldMs: U64;
};

export type FdClosedMessage = { cookie: U64; remote: string; closedBy?: CloserMessage; stillHeldBy: OwnerMessage[] };

export type ConnectFailureMessage = {
  pid: number;
  tid: number;
  comm: string;
  remote: string;
  errnoName: string;
  count: number;
  netns: number;
  call: 'CONNECT' | 'BIND';
};

export type PortCloserMessage = { pid: number; comm: string; ratePerSec: number };

export type PortPressureMessage = {
  netns: number;
  remote: string;
  timeWait: number;
  established: number;
  free: number;
  usable: number;
  portRangeLow: number;
  portRangeHigh: number;
  twReuse: number;
  ratePerSec: number;
  closers: PortCloserMessage[];
  recentFailures: number;
  exhaustInSec?: number;
  nextFreeInMs?: U64;
  forecast: string;
  remedies: string[];
};

export type RemotePortsMessage = {
  remote: string;
  timeWait: number;
  established: number;
  other: number;
  free: number;
  used: number;
  nextFreeInMs?: U64;
};

export type SourcePortsMessage = { source: string; timeWait: number; established: number };

export type NetnsPortsMessage = {
  netns: number;
  portRangeLow: number;
  portRangeHigh: number;
  usablePorts: number;
  reservedPorts: number;
  boundPorts: number;
  twReuse: number;
  timeWait: number;
  established: number;
  byRemote: RemotePortsMessage[];
  bySource: SourcePortsMessage[];
};

export type PortsMessage = { takenAt: string; netns: NetnsPortsMessage[] };

export type CountersMessage = { emitted: U64; lost: U64; mapFull: U64; evictions: U64; streamDropped: U64 };

export type GapMessage = { droppedRecords: U64; droppedBytes: U64 };

/** Record's oneof `body`: exactly one of these is set. */
export type RecordBody =
  | { snapshot: SnapshotMessage }
  | { leak: LeakMessage }
  | { resolved: ResolvedMessage }
  | { fdClosed: FdClosedMessage }
  | { connectFailure: ConnectFailureMessage }
  | { portPressure: PortPressureMessage }
  | { ports: PortsMessage }
  | { counters: CountersMessage }
  | { gap: GapMessage };

/** The envelope of every record in a stream or recording. */
export type RecordMessage = RecordBody & { timeUnixMs: U64; seq: U64 };
