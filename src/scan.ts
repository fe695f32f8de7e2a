/**
 * Snapshots of what exists now, from the BPF iterators (bpf/scan.bpf.c): the
 * owners of every TCP socket (iter/task_file, all namespaces) and every TCP
 * socket of each network namespace (iter/tcp), merged by cookie.
 */
import { readdirSync, readlinkSync } from 'node:fs';
import { formatEndpoint } from './address';
import { loadAddon, type NativeScanner, type NativeScanRequest } from './addon';
import { monotonicNowNs } from './clock';
import { KernelUnsupportedError } from './errors';
import { PORT_CENSUS, PORT_CENSUS_SIZE, SOCK, SOCK_FLAGS, SOCK_SIZE } from './generated/layout';
import { explainNativeError, requireBpfPrivileges, requireBtf, requireProcess } from './preflight';
import type { Owner, SocketInfo } from './sockets';
import { tcpStateName, tcpStateNumber, type TcpState } from './tcp-states';

const AF_INET = 2;
/** TCP_TIMEWAIT_LEN: how long the kernel keeps a TIME_WAIT socket. */
const TIME_WAIT_MS = 60_000;

/** One decoded struct sl_sock. */
interface SockRecord {
  info: SocketInfo;
  owner: Owner | undefined;
}

function decodeRecord(buf: Buffer, at: number, nowNs: number): SockRecord {
  const u32 = (f: { offset: number }): number => buf.readUInt32LE(at + f.offset);
  const flags = buf.readUInt8(at + SOCK.flags.offset);
  const family = buf.readUInt16LE(at + SOCK.family.offset) === AF_INET ? 4 : 6;
  const state = tcpStateName(buf.readUInt8(at + SOCK.state.offset));
  const keepalive = (flags & SOCK_FLAGS.KEEPALIVE) !== 0;
  const timerMs = flags & SOCK_FLAGS.TIMER ? u32(SOCK.timer_ms) : null;
  const lastActiveNs = Number(buf.readBigUInt64LE(at + SOCK.last_active_ns.offset));
  let stateAgeMs: number | null = null;
  if (state === 'TIME_WAIT' && timerMs !== null) stateAgeMs = Math.max(0, TIME_WAIT_MS - timerMs);
  else if (state === 'CLOSE_WAIT' && lastActiveNs > 0) stateAgeMs = Math.max(0, Math.round((nowNs - lastActiveNs) / 1e6));
  const probes = buf.readUInt8(at + SOCK.keepalive_probes.offset);
  const comm = buf.subarray(at + SOCK.comm.offset, at + SOCK.comm.offset + SOCK.comm.size);
  const nul = comm.indexOf(0);
  const info: SocketInfo = {
    cookie: buf.readBigUInt64LE(at + SOCK.cookie.offset).toString(),
    state,
    family,
    local: formatEndpoint(family, buf.subarray(at + SOCK.saddr.offset, at + SOCK.saddr.offset + 16), buf.readUInt16LE(at + SOCK.sport.offset)),
    remote: formatEndpoint(family, buf.subarray(at + SOCK.daddr.offset, at + SOCK.daddr.offset + 16), buf.readUInt16LE(at + SOCK.dport.offset)),
    netns: u32(SOCK.netns_ino),
    owners: [],
    creator: null,
    recvQ: u32(SOCK.recv_q),
    sendQ: u32(SOCK.send_q),
    keepalive,
    keepaliveProbeInMs: keepalive && state !== 'TIME_WAIT' ? timerMs : null,
    keepaliveReapByMs:
      keepalive && state !== 'TIME_WAIT' && timerMs !== null ? timerMs + probes * u32(SOCK.keepalive_intvl_ms) : null,
    stateAgeMs,
    ageEstimated: stateAgeMs !== null,
    uid: u32(SOCK.uid),
  };
  const owner =
    flags & SOCK_FLAGS.OWNED
      ? { pid: u32(SOCK.pid), comm: comm.toString('latin1', 0, nul < 0 ? comm.length : nul), fd: buf.readInt32LE(at + SOCK.fd.offset) }
      : undefined;
  return { info, owner };
}

/** Bit mask of kernel state numbers for the iterators' in-kernel filter; 0 = all. */
export function stateMask(states: readonly TcpState[] | undefined): number {
  if (!states || states.length === 0) return 0;
  let mask = 0;
  for (const s of states) mask |= 1 << (tcpStateNumber(s) ?? 0);
  return mask >>> 0;
}

/** One path per distinct network namespace that has a process in it: /proc/PID/ns/net. */
export function networkNamespaces(): Map<number, string> {
  const found = new Map<number, string>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const path = `/proc/${entry}/ns/net`;
    try {
      const ino = Number(/\[(\d+)\]/.exec(readlinkSync(path))?.[1]);
      if (ino && !found.has(ino)) found.set(ino, path);
    } catch {
      // the process exited, or is a kernel thread without namespaces
    }
  }
  return found;
}

/** Inode of this process's network namespace. */
function ownNetns(): number {
  return Number(/\[(\d+)\]/.exec(readlinkSync('/proc/self/ns/net'))?.[1]);
}

/** Ephemeral ports one network namespace's sockets hold (struct sl_port_census), counted in the kernel. */
export interface PortCensus {
  netns: number;
  /** net.ipv4.ip_local_port_range as the kernel has it, inclusive. */
  portRange: [number, number];
  /**
   * Distinct ports of the range held by sockets other than listeners, listeners'
   * ports excluded: no destination can have more of the range in use.
   */
  portsUsed: number;
  /** Distinct ports of the range a listener holds (they are not usable by connect()). */
  listeningPorts: number;
  /** TCP sockets of the namespace. */
  sockets: number;
}

export interface ScanOptions {
  /** Only sockets held by this process (orphans are then never included). */
  pid?: number;
  /** Only these states (filtered in the kernel). Default: all. */
  states?: readonly TcpState[];
  /** Kernel BTF to relocate against. */
  btfPath?: string;
  /** Receives each raw buffer of struct sl_sock records (watch seeds the kernel with them). */
  onRaw?: (records: Buffer) => void;
}

/** A loaded pair of iterators; reuse it for repeated scans (watch, agent), close() when done. */
export class SocketScanner {
  private readonly native: NativeScanner;

  constructor(options: { btfPath?: string } = {}) {
    requireBpfPrivileges();
    const btfPath = requireBtf(options.btfPath);
    const addon = loadAddon();
    try {
      this.native = new addon.Scanner(btfPath !== undefined ? { btfPath } : {});
    } catch (err) {
      throw explainNativeError(err);
    }
  }

  /** One iterator run, decoded; records whose cookie `skip` accepts are not decoded at all. */
  private async run(
    request: NativeScanRequest,
    onRaw?: (records: Buffer) => void,
    skip?: (cookie: string) => boolean,
  ): Promise<SockRecord[]> {
    let buf: Buffer;
    try {
      buf = await this.native.scan(request);
    } catch (err) {
      throw explainNativeError(err);
    }
    onRaw?.(buf);
    const nowNs = monotonicNowNs();
    const records: SockRecord[] = [];
    for (let at = 0; at + SOCK_SIZE <= buf.length; at += SOCK_SIZE) {
      if (skip?.(buf.readBigUInt64LE(at + SOCK.cookie.offset).toString())) continue;
      records.push(decodeRecord(buf, at, nowNs));
    }
    return records;
  }

  /**
   * Every TCP socket matching the options, with all its owners, merged by
   * cookie. Sockets held by processes come from iter/task_file (any netns);
   * without `pid`, orphans of every netns that has a process come from iter/tcp
   * (both iterators assign cookies, so the order does not matter; owned sockets
   * first, so iter/tcp's copies of them need no decoding).
   */
  async scan(options: ScanOptions = {}): Promise<Map<string, SocketInfo>> {
    if (options.pid !== undefined) requireProcess(options.pid);
    const mask = stateMask(options.states);
    const sockets = new Map<string, SocketInfo>();
    const owned = await this.run(
      { kind: 'files', stateMask: mask, ...(options.pid !== undefined && { pid: options.pid }) },
      options.onRaw,
    );
    for (const { info, owner } of owned) {
      let socket = sockets.get(info.cookie);
      if (!socket) sockets.set(info.cookie, (socket = info));
      if (owner && !socket.owners.some((o) => o.pid === owner.pid && o.fd === owner.fd)) socket.owners.push(owner);
    }
    if (options.pid !== undefined) return sockets;
    const own = ownNetns();
    for (const [ino, nsPath] of networkNamespaces()) {
      // Our own namespace needs no setns() (which wants CAP_SYS_ADMIN).
      const path = ino === own ? undefined : nsPath;
      let orphans: SockRecord[];
      try {
        orphans = await this.run(
          { kind: 'tcp', stateMask: mask, ...(path && { netnsPath: path }) },
          options.onRaw,
          (cookie) => sockets.has(cookie),
        );
      } catch (err) {
        if (err instanceof KernelUnsupportedError && /netns/.test(err.message)) continue; // the process exited
        throw err;
      }
      for (const { info } of orphans) sockets.set(info.cookie, info);
    }
    return sockets;
  }

  /** iter/tcp of one namespace, entered by path unless it is ours (setns wants CAP_SYS_ADMIN); undefined once it is gone. */
  private async inNetns<T>(netnsPath: string, run: (path: string | undefined) => Promise<T>): Promise<T | undefined> {
    let path: string | undefined;
    try {
      path = readlinkSync(netnsPath) === readlinkSync('/proc/self/ns/net') ? undefined : netnsPath;
    } catch {
      return undefined; // the process that showed the way exited
    }
    try {
      return await run(path);
    } catch (err) {
      if (err instanceof KernelUnsupportedError && /netns/.test(err.message)) return undefined; // its last process exited
      throw err;
    }
  }

  /**
   * Every TCP socket of one network namespace (`netnsPath`: /proc/PID/ns/net of a
   * process in it), owners not resolved: what port accounting needs, at the cost
   * of one iter/tcp. Undefined when the namespace can no longer be entered.
   */
  async scanNetns(netnsPath: string, options: { states?: readonly TcpState[] } = {}): Promise<SocketInfo[] | undefined> {
    const records = await this.inNetns(netnsPath, (path) =>
      this.run({ kind: 'tcp', stateMask: stateMask(options.states), ...(path && { netnsPath: path }) }),
    );
    return records?.map((r) => r.info);
  }

  /** The port census of one network namespace: nothing decoded per socket. Undefined when it is gone. */
  async census(netns: number, netnsPath: string): Promise<PortCensus | undefined> {
    return this.inNetns(netnsPath, async (path) => {
      let buf: Buffer;
      try {
        buf = await this.native.scan({ kind: 'census', ...(path && { netnsPath: path }) });
      } catch (err) {
        throw explainNativeError(err);
      }
      if (buf.length < PORT_CENSUS_SIZE) throw new Error(`port census: ${buf.length} bytes, expected ${PORT_CENSUS_SIZE}`);
      const u32 = (f: { offset: number }): number => buf.readUInt32LE(f.offset);
      return {
        netns,
        portRange: [u32(PORT_CENSUS.range_lo), u32(PORT_CENSUS.range_hi)],
        portsUsed: u32(PORT_CENSUS.ports_used),
        listeningPorts: u32(PORT_CENSUS.listening_ports),
        sockets: u32(PORT_CENSUS.sockets),
      };
    });
  }

  close(): void {
    this.native.close();
  }
}
