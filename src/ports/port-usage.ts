/**
 * How many ephemeral ports are left, per destination, in one network namespace:
 * pure arithmetic over a socket snapshot and the namespace's sysctls.
 *
 * The kernel's rule (__inet_hash_connect, net/ipv4/inet_hashtables.c): a
 * connect() on an unbound socket walks ip_local_port_range — an even number of
 * its ports, stepping by 2 from a start hashed from the destination and wrapping
 * past the top, so in an odd range one port per destination is never tried,
 * though any may be taken — skipping ip_local_reserved_ports and any
 * port someone bound explicitly (bind(), listen()). A remaining port is usable
 * if no socket already has the same 4-tuple (source address, port, destination
 * address, port). So ports are exhausted per destination, not globally: for one
 * destination (and the source address routing picks for it) the usable ports are
 * the range minus the ports already used to that same destination, TIME_WAIT
 * included — unless tcp_tw_reuse lets connect() take over a TIME_WAIT socket
 * (1: always; 2: when either address is loopback; either way only with TCP
 * timestamps and once the TIME_WAIT is older than tcp_tw_reuse_delay).
 * Not modelled: the per-socket IP_LOCAL_PORT_RANGE option and explicitly bound
 * ports of sockets that are not listening (the snapshot cannot tell them apart).
 */
import type { PortSysctls } from './port-sysctls';
import type { SocketInfo } from '../sockets';
import { TIME_WAIT_MS } from '../tcp-states';

/**
 * What port counting reads of a socket (a SocketInfo has it; port-scan.ts makes just this, with
 * the local address and port apart so that they need no splitting). `stateAgeMs` is read for TIME_WAIT only.
 */
export type PortSocket = Pick<SocketInfo, 'netns' | 'state' | 'local' | 'remote' | 'stateAgeMs'> & {
  readonly localHost?: string;
  readonly localPort?: number;
};

/** A socket's local host (IPv6 without brackets) and port. */
function localOf(s: PortSocket): { host: string; port: number } {
  return s.localHost !== undefined && s.localPort !== undefined ? { host: s.localHost, port: s.localPort } : splitEndpoint(s.local);
}


/** Outgoing connections to one destination (remote ip:port). */
export interface RemotePorts {
  /** `a.b.c.d:port` or `[v6]:port`. */
  remote: string;
  timeWait: number;
  established: number;
  /** Sockets in the other connected states (SYN_SENT, FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK, CLOSING). */
  other: number;
  /** Ports connect() can still pick for this destination. */
  free: number;
  /** Usable ports of the range taken toward this destination (usable - free). */
  used: number;
  /** ms until the oldest TIME_WAIT to it expires and gives a port back; null without TIME_WAIT. */
  nextFreeInMs: number | null;
}

/** Sockets per local (source) address. */
export interface SourcePorts {
  /** Local address, without port (IPv6 without brackets). */
  source: string;
  timeWait: number;
  established: number;
}

/** Ephemeral ports of one network namespace. */
export interface NetnsPorts {
  /** Inode of the network namespace. */
  netns: number;
  /** net.ipv4.ip_local_port_range of this namespace, inclusive. */
  portRange: [number, number];
  /** Ports connect() picks from: the range (even-sized), minus reserved and explicitly bound (listening) ports. */
  usablePorts: number;
  /** Ports of the range in ip_local_reserved_ports. */
  reservedPorts: number;
  /** Ports of the range that a listening socket has bound. */
  boundPorts: number;
  /** net.ipv4.tcp_tw_reuse of this namespace. */
  twReuse: 0 | 1 | 2;
  /** Every TIME_WAIT socket of the namespace (outgoing or not). */
  timeWait: number;
  established: number;
  /** Destinations of outgoing connections (local port in the range), most used first. */
  byRemote: RemotePorts[];
  /** Every socket of the namespace by local address, most TIME_WAIT first. */
  bySource: SourcePorts[];
}

/** Host and port of an endpoint as address.ts formats it (`a.b.c.d:p`, `[v6]:p`). */
export function splitEndpoint(endpoint: string): { host: string; port: number } {
  const colon = endpoint.lastIndexOf(':');
  const host = endpoint.slice(0, colon);
  return { host: host.startsWith('[') ? host.slice(1, -1) : host, port: Number(endpoint.slice(colon + 1)) };
}

/** 127.0.0.0/8, ::1 or IPv4-mapped loopback: where tcp_tw_reuse=2 applies. */
export function isLoopbackHost(host: string): boolean {
  return host.startsWith('127.') || host === '::1' || host.startsWith('::ffff:127.');
}

/**
 * The ports of the range connect() may pick: [first, last] minus reserved and
 * bound ports. For one destination it tries `tried` of them: an even number,
 * stepping by 2 from a hashed start and wrapping at the top, so in an
 * odd-sized range one port is never tried, but which one depends on the start:
 * any port of the range may be the one a connection took.
 */
function usableSet(sysctls: PortSysctls, bound: ReadonlySet<number>): { first: number; last: number; tried: number; excluded: Set<number>; reserved: number } {
  const [lo, hi] = sysctls.portRange;
  const size = hi - lo + 1;
  const excluded = new Set<number>();
  let reserved = 0;
  for (const [a, b] of sysctls.reserved) {
    for (let p = Math.max(a, lo); p <= Math.min(b, hi); p++) {
      if (!excluded.has(p)) reserved++;
      excluded.add(p);
    }
  }
  for (const p of bound) if (p >= lo && p <= hi) excluded.add(p);
  return { first: lo, last: hi, tried: size > 1 ? size & ~1 : size, excluded, reserved };
}

/** Whether tcp_tw_reuse lets connect() take over TIME_WAIT sockets between these hosts (once old enough). */
export function twReuseApplies(sysctls: PortSysctls, localHost: string, remoteHost: string): boolean {
  if (sysctls.twReuse === 0 || !sysctls.timestamps) return false;
  return sysctls.twReuse === 1 || isLoopbackHost(localHost) || isLoopbackHost(remoteHost);
}

/** Whether connect() may take over this TIME_WAIT socket instead of treating its port as used. */
function reusable(s: PortSocket, local: string, remote: string, sysctls: PortSysctls): boolean {
  return twReuseApplies(sysctls, local, remote) && s.stateAgeMs !== null && s.stateAgeMs > sysctls.twReuseDelayMs;
}

/**
 * Counts ports for one namespace from its sockets (any states; LISTEN ones
 * mark bound ports). Iterates them twice and keeps no socket object (a port
 * scan hands out one reused view, port-scan.ts).
 */
export function portUsage(netns: number, sockets: Iterable<PortSocket>, sysctls: PortSysctls): NetnsPorts {
  const listening = new Set<number>();
  for (const s of sockets) if (s.state === 'LISTEN') listening.add(localOf(s).port);
  const usable = usableSet(sysctls, listening);
  const usableCount = Math.max(0, usable.tried - usable.excluded.size);
  const remotes = new Map<string, RemotePorts & { portsBySource: Map<string, Set<number>> }>();
  const sources = new Map<string, SourcePorts>();
  let timeWait = 0;
  let established = 0;
  for (const s of sockets) {
    if (s.state === 'LISTEN' || s.state === 'CLOSE') continue;
    const local = localOf(s);
    const tw = s.state === 'TIME_WAIT' ? 1 : 0;
    const est = s.state === 'ESTABLISHED' ? 1 : 0;
    timeWait += tw;
    established += est;
    let source = sources.get(local.host);
    if (!source) sources.set(local.host, (source = { source: local.host, timeWait: 0, established: 0 }));
    source.timeWait += tw;
    source.established += est;
    // Outgoing only: accepted connections share their listener's port and never take one from the range.
    if (local.port < usable.first || local.port > usable.last || listening.has(local.port)) continue;
    let r = remotes.get(s.remote);
    if (!r) {
      r = { remote: s.remote, timeWait: 0, established: 0, other: 0, free: 0, used: 0, nextFreeInMs: null, portsBySource: new Map() };
      remotes.set(s.remote, r);
    }
    r.timeWait += tw;
    r.established += est;
    r.other += 1 - tw - est;
    if (tw && s.stateAgeMs !== null) {
      const expiresIn = Math.max(0, TIME_WAIT_MS - s.stateAgeMs);
      r.nextFreeInMs = r.nextFreeInMs === null ? expiresIn : Math.min(r.nextFreeInMs, expiresIn);
    }
    if (usable.excluded.has(local.port)) continue;
    if (tw && reusable(s, local.host, splitEndpoint(s.remote).host, sysctls)) continue;
    let taken = r.portsBySource.get(local.host);
    if (!taken) r.portsBySource.set(local.host, (taken = new Set()));
    taken.add(local.port);
  }
  const byRemote = [...remotes.values()].map(({ portsBySource, ...r }) => {
    // Routing picks one source address per destination; the busiest one is the one that runs out.
    const used = Math.max(0, ...[...portsBySource.values()].map((p) => p.size));
    return { ...r, used, free: Math.max(0, usableCount - used) };
  });
  byRemote.sort((a, b) => b.used - a.used || b.timeWait - a.timeWait || a.remote.localeCompare(b.remote));
  const bySource = [...sources.values()].sort((a, b) => b.timeWait - a.timeWait || b.established - a.established || a.source.localeCompare(b.source));
  return {
    netns,
    portRange: [...sysctls.portRange],
    usablePorts: usableCount,
    reservedPorts: usable.reserved,
    boundPorts: usable.excluded.size - usable.reserved,
    twReuse: sysctls.twReuse,
    timeWait,
    established,
    byRemote,
    bySource,
  };
}
