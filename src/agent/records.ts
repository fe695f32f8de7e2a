/**
 * What the agent streams and records, as TypeScript records: the leak engine's
 * records plus the port records of `sockleak ports`/`watch` (issue 5).
 *
 * The port types mirror, field for field, those of src/port-watcher.ts,
 * src/port-pressure.ts, src/port-usage.ts and src/ports.ts, so that their
 * records can be passed here as they are. Hook: once those modules are in
 * the tree for good, replace these declarations with re-exports of theirs.
 */
import type { WatchRecord } from '../leak-watcher';

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
  /** Failures in the interval. */
  count: number;
  netns: number;
}

/** A process that closes connections to a destination first, leaving TIME_WAIT behind. */
export interface PortCloser {
  pid: number;
  comm: string;
  /** Active closes per second to this destination (recent window). */
  ratePerSec: number;
}

/** A destination whose ephemeral ports are at least 80% used. */
export interface PortPressureRecord {
  type: 'port-pressure';
  netns: number;
  remote: string;
  timeWait: number;
  established: number;
  free: number;
  usable: number;
  range: [number, number];
  twReuse: 0 | 1 | 2;
  ratePerSec: number;
  closers: PortCloser[];
  recentFailures: number;
  exhaustInSec: number | null;
  nextFreeInMs: number | null;
  forecast: string;
  remedies: string[];
}

/** Outgoing connections to one destination (remote ip:port). */
export interface RemotePorts {
  remote: string;
  timeWait: number;
  established: number;
  other: number;
  free: number;
  used: number;
  nextFreeInMs: number | null;
}

/** Sockets per local (source) address. */
export interface SourcePorts {
  source: string;
  timeWait: number;
  established: number;
}

/** Ephemeral ports of one network namespace. */
export interface NetnsPorts {
  netns: number;
  portRange: [number, number];
  usablePorts: number;
  reservedPorts: number;
  boundPorts: number;
  twReuse: 0 | 1 | 2;
  timeWait: number;
  established: number;
  byRemote: RemotePorts[];
  bySource: SourcePorts[];
}

/** `sockleak ports --json`: ports per network namespace. */
export interface PortsSnapshot {
  takenAt: string;
  netns: NetnsPorts[];
}

/** What the port tracker reports. */
export type PortRecord = PortFailureRecord | PortPressureRecord;

/** Every record the agent can take from its sources. */
export type AgentRecord = WatchRecord | PortRecord;
