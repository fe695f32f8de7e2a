/**
 * Snapshots of what exists now, from the BPF iterators (bpf/scan.bpf.c): the
 * owners of every TCP socket (iter/task_file, all namespaces) and every TCP
 * socket of each network namespace (iter/tcp), merged by cookie.
 */
import { readdirSync, readlinkSync } from 'node:fs';
import { formatIPv4, formatIPv6 } from './address';
import { loadAddon, type NativeScanner, type NativeScanRequest } from './addon';
import { monotonicNowNs } from './clock';
import { KernelUnsupportedError } from './errors';
import { SOCK, SOCK_FLAGS, SOCK_SIZE } from './generated/layout';
import { explainNativeError, requireBpfPrivileges, requireBtf, requireProcess } from './preflight';
import type { Owner, SocketInfo } from './sockets';
import { tcpStateName, tcpStateNumber, type TcpState } from './tcp-states';

const AF_INET = 2;
/** TCP_TIMEWAIT_LEN: how long the kernel keeps a TIME_WAIT socket. */
const TIME_WAIT_MS = 60_000;

/**
 * A decoded struct sl_sock: the socket (its owners: the (pid, fd) this record
 * was found through, if any) and its cookie as a number (NaN past 2^53).
 */
type OnRecord = (info: SocketInfo, cookie: number) => void;

const TWO_32 = 4294967296;
/** Distinct endpoints remembered per scan: peers and listeners repeat, ephemeral ends do not. */
const ENDPOINT_CACHE = 4096;

/** ":port" strings, made once each: a unique endpoint is then one cons string over two shared ones. */
const PORT_SUFFIXES = new Map<number, string>(); // (a sparse array would fall back to dictionary elements)
function portSuffix(port: number): string {
  let suffix = PORT_SUFFIXES.get(port);
  if (suffix === undefined) PORT_SUFFIXES.set(port, (suffix = `:${port}`));
  return suffix;
}

/** Word index of a 4-byte field in a record, and of 2-byte ones. */
const W = (f: { offset: number }): number => f.offset >> 2;
const H = (f: { offset: number }): number => f.offset >> 1;
const F = {
  cookieLo: W(SOCK.cookie),
  lastActiveLo: W(SOCK.last_active_ns),
  saddr: SOCK.saddr.offset,
  daddr: SOCK.daddr.offset,
  netns: W(SOCK.netns_ino),
  uid: W(SOCK.uid),
  recvQ: W(SOCK.recv_q),
  sendQ: W(SOCK.send_q),
  timerMs: W(SOCK.timer_ms),
  intvlMs: W(SOCK.keepalive_intvl_ms),
  pid: W(SOCK.pid),
  fd: W(SOCK.fd),
  sport: H(SOCK.sport),
  dport: H(SOCK.dport),
  family: H(SOCK.family),
  state: SOCK.state.offset,
  flags: SOCK.flags.offset,
  probes: SOCK.keepalive_probes.offset,
  comm: SOCK.comm.offset,
} as const;

/**
 * Decodes struct sl_sock records into SocketInfo objects. One decoder serves one
 * buffer: it reads through typed-array views (cheap even before the JIT warms
 * up, which a one-shot `snapshot` never waits for) and interns what repeats
 * across records (address text, comm per pid), so 100k sockets to a handful
 * of peers make a handful of address strings.
 */
class SockDecoder {
  private readonly u8: Uint8Array;
  private readonly u16: Uint16Array;
  private readonly u32: Uint32Array;
  private readonly i32: Int32Array;
  private readonly addresses = new Map<string | number, string>();
  /** Whole IPv4 endpoints by (address, port), while they repeat (many sockets to one peer, or on one listener). */
  private readonly endpoints = new Map<number, string>();
  private readonly comms = new Map<number, string>();
  private readonly nowNs = monotonicNowNs();

  constructor(private readonly buf: Buffer) {
    // The views need 4-byte alignment: the addon's buffers have it, a copy gets it.
    const aligned = buf.byteOffset % 4 === 0 ? buf : Buffer.from(buf);
    this.buf = aligned;
    const { buffer, byteOffset, length } = aligned;
    this.u8 = new Uint8Array(buffer, byteOffset, length);
    this.u16 = new Uint16Array(buffer, byteOffset, length >> 1);
    this.u32 = new Uint32Array(buffer, byteOffset, length >> 2);
    this.i32 = new Int32Array(buffer, byteOffset, length >> 2);
  }

  /** Cookie of the record at byte `at` as a number; NaN when it does not fit a double exactly. */
  cookieNumber(at: number): number {
    const w = (at >> 2) + F.cookieLo;
    const hi = this.u32[w + 1]!;
    return hi < 0x200000 ? hi * TWO_32 + this.u32[w]! : NaN;
  }

  /** The same cookie as a decimal string (BigInt only past 2^53). */
  cookie(at: number, n = this.cookieNumber(at)): string {
    return Number.isNaN(n) ? this.buf.readBigUInt64LE(at + SOCK.cookie.offset).toString() : String(n);
  }

  private address(family: 4 | 6, at: number): string {
    const key = family === 4 ? this.u32[at >> 2]! : this.buf.toString('latin1', at, at + 16);
    let text = this.addresses.get(key);
    if (text === undefined) {
      text = family === 4 ? formatIPv4(this.u8.subarray(at, at + 4)) : `[${formatIPv6(this.u8.subarray(at, at + 16))}]`;
      this.addresses.set(key, text);
    }
    return text;
  }

  private endpoint(family: 4 | 6, at: number, port: number): string {
    if (family === 6) return this.address(6, at) + portSuffix(port);
    const key = this.u32[at >> 2]! * 65536 + port;
    let text = this.endpoints.get(key);
    if (text === undefined) {
      text = this.address(4, at) + portSuffix(port);
      if (this.endpoints.size < ENDPOINT_CACHE) this.endpoints.set(key, text);
    }
    return text;
  }

  private comm(pid: number, at: number): string {
    let text = this.comms.get(pid);
    if (text === undefined) {
      const bytes = this.buf.subarray(at + F.comm, at + F.comm + SOCK.comm.size);
      const nul = bytes.indexOf(0);
      text = bytes.toString('latin1', 0, nul < 0 ? bytes.length : nul);
      this.comms.set(pid, text);
    }
    return text;
  }

  decode(at: number, onRecord: OnRecord): void {
    const { u8, u16, u32 } = this;
    const w = at >> 2;
    const h = at >> 1;
    const flags = u8[at + F.flags]!;
    const family = u16[h + F.family] === AF_INET ? 4 : 6;
    const state = tcpStateName(u8[at + F.state]!);
    const keepalive = (flags & SOCK_FLAGS.KEEPALIVE) !== 0;
    const timerMs = flags & SOCK_FLAGS.TIMER ? u32[w + F.timerMs]! : null;
    const lastActiveNs = u32[w + F.lastActiveLo + 1]! * TWO_32 + u32[w + F.lastActiveLo]!;
    let stateAgeMs: number | null = null;
    if (state === 'TIME_WAIT' && timerMs !== null) stateAgeMs = Math.max(0, TIME_WAIT_MS - timerMs);
    else if (state === 'CLOSE_WAIT' && lastActiveNs > 0) stateAgeMs = Math.max(0, Math.round((this.nowNs - lastActiveNs) / 1e6));
    const keepaliveTimer = keepalive && state !== 'TIME_WAIT' ? timerMs : null;
    let owners: Owner[] = [];
    if (flags & SOCK_FLAGS.OWNED) {
      const pid = u32[w + F.pid]!;
      owners = [{ pid, comm: this.comm(pid, at), fd: this.i32[w + F.fd]! }];
    }
    const cookie = this.cookieNumber(at);
    const info: SocketInfo = {
      cookie: this.cookie(at, cookie),
      state,
      family,
      local: this.endpoint(family, at + F.saddr, u16[h + F.sport]!),
      remote: this.endpoint(family, at + F.daddr, u16[h + F.dport]!),
      netns: u32[w + F.netns]!,
      owners,
      creator: null,
      recvQ: u32[w + F.recvQ]!,
      sendQ: u32[w + F.sendQ]!,
      keepalive,
      keepaliveProbeInMs: keepaliveTimer,
      keepaliveReapByMs: keepaliveTimer !== null ? keepaliveTimer + u8[at + F.probes]! * u32[w + F.intvlMs]! : null,
      stateAgeMs,
      ageEstimated: stateAgeMs !== null,
      uid: u32[w + F.uid]!,
    };
    onRecord(info, cookie);
  }
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

/** Where the last scan's time went (benchmarks print it). */
export interface ScanStats {
  /** Waiting for the kernel: iter/task_file beside the sock_diag census, then any iter/tcp runs. */
  kernelMs: number;
  /** Decoding and merging records in JavaScript. */
  decodeMs: number;
  /** Namespaces where iter/tcp had to run (the census found a socket no process holds). */
  tcpScans: number;
  /** Records decoded. */
  records: number;
}

/**
 * The iterators of bpf/scan.bpf.c, loaded by the first scan (which then also
 * reports a load failure); reuse one for repeated scans (watch, agent), close()
 * when done.
 */
export class SocketScanner {
  private readonly native: NativeScanner;
  /** Figures of the last completed scan(). */
  lastStats: ScanStats = { kernelMs: 0, decodeMs: 0, tcpScans: 0, records: 0 };

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

  /** Runs one native scan: raw records (or cookies, for kind 'cookies'). */
  private async raw(request: NativeScanRequest): Promise<Buffer> {
    try {
      return await this.native.scan(request);
    } catch (err) {
      throw explainNativeError(err);
    }
  }

  /** Decodes a buffer of records; those whose cookie `skip` accepts are not decoded at all. */
  private static decode(buf: Buffer, onRecord: OnRecord, skip?: (cookie: number) => boolean): void {
    const decoder = new SockDecoder(buf);
    for (let at = 0; at + SOCK_SIZE <= buf.length; at += SOCK_SIZE) {
      if (!skip?.(decoder.cookieNumber(at))) decoder.decode(at, onRecord);
    }
  }

  /**
   * Cookies of the sockets in `mask`'s states in one netns, from sock_diag (the
   * kernel filters by state cheaply); undefined when the census cannot answer
   * (every state asked: iter/tcp is needed anyway; or the namespace is gone).
   */
  private async census(mask: number, netnsPath: string | undefined): Promise<Float64Array | undefined> {
    if (mask === 0) return undefined;
    let buf: Buffer;
    try {
      buf = await this.raw({ kind: 'cookies', stateMask: mask, ...(netnsPath && { netnsPath }) });
    } catch {
      return undefined; // iter/tcp will say what is wrong, or find the process gone
    }
    const cookies = new Float64Array(buf.length >> 3);
    for (let i = 0; i < cookies.length; i++) {
      const hi = buf.readUInt32LE(i * 8 + 4);
      if (hi >= 0x200000) return undefined; // not exact as a number: let iter/tcp decide
      cookies[i] = hi * TWO_32 + buf.readUInt32LE(i * 8);
    }
    return cookies;
  }

  /**
   * Every TCP socket matching the options, with all its owners, merged by
   * cookie. Sockets held by processes come from iter/task_file (any netns);
   * without `pid`, orphans of every netns that has a process come from iter/tcp
   * (both iterators assign cookies, so the order does not matter; owned sockets
   * first, so iter/tcp's copies of them need no decoding). With a state filter,
   * a sock_diag census of each netns runs beside iter/task_file, and iter/tcp
   * (which locks every socket of the netns) runs only where the census found a
   * socket no process holds: for CLOSE_WAIT, usually nowhere.
   */
  async scan(options: ScanOptions = {}): Promise<Map<string, SocketInfo>> {
    if (options.pid !== undefined) requireProcess(options.pid);
    const mask = stateMask(options.states);
    const sockets = new Map<string, SocketInfo>();
    const own = ownNetns();
    const namespaces = options.pid === undefined ? [...networkNamespaces()] : [];
    // Our own namespace needs no setns() (which wants CAP_SYS_ADMIN).
    const pathOf = (ino: number, nsPath: string): string | undefined => (ino === own ? undefined : nsPath);
    const stats: ScanStats = { kernelMs: 0, decodeMs: 0, tcpScans: 0, records: 0 };
    const t0 = performance.now();
    const [owned, ...censuses] = await Promise.all([
      this.raw({ kind: 'files', stateMask: mask, ...(options.pid !== undefined && { pid: options.pid }) }),
      ...namespaces.map(([ino, nsPath]) => this.census(mask, pathOf(ino, nsPath))),
    ]);
    stats.kernelMs += performance.now() - t0;
    options.onRaw?.(owned);
    stats.records += owned.length / SOCK_SIZE;
    const ownedCookies = new Set<number>();
    SocketScanner.decode(owned, (info, cookie) => {
      ownedCookies.add(cookie);
      const known = sockets.get(info.cookie);
      if (!known) sockets.set(info.cookie, info);
      else for (const o of info.owners) if (!known.owners.some((k) => k.pid === o.pid && k.fd === o.fd)) known.owners.push(o);
    });
    for (const [i, [ino, nsPath]] of namespaces.entries()) {
      const census = censuses[i];
      if (census?.every((cookie) => ownedCookies.has(cookie))) continue;
      let orphans: Buffer;
      const t1 = performance.now();
      try {
        const path = pathOf(ino, nsPath);
        orphans = await this.raw({ kind: 'tcp', stateMask: mask, ...(path && { netnsPath: path }) });
      } catch (err) {
        if (err instanceof KernelUnsupportedError && /netns/.test(err.message)) continue; // the process exited
        throw err;
      }
      stats.kernelMs += performance.now() - t1;
      stats.tcpScans++;
      stats.records += orphans.length / SOCK_SIZE;
      options.onRaw?.(orphans);
      SocketScanner.decode(orphans, (info) => sockets.set(info.cookie, info), (cookie) => !Number.isNaN(cookie) && ownedCookies.has(cookie));
    }
    stats.decodeMs = performance.now() - t0 - stats.kernelMs;
    this.lastStats = stats;
    return sockets;
  }

  close(): void {
    this.native.close();
  }
}
