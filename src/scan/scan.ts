/**
 * Snapshots of what exists now, from the BPF iterators (bpf/scan.bpf.c): the
 * owners of every TCP socket (iter/task_file, all namespaces) and every TCP
 * socket of each network namespace (iter/tcp), merged by cookie.
 */
import { readlinkSync } from 'node:fs';
import type { NativeScanner, NativeScanRequest } from '../kernel/addon';
import { CENSUS_SOCK, CENSUS_SOCK_SIZE, PORT_CENSUS, PORT_CENSUS_SIZE, SOCK, SOCK_SIZE } from '../generated/layout';
import { isVanishedNetns, netnsTarget, networkNamespaces, openNativeScanner, ownNetns, runScan, scanEachNetns, stateMask } from './native-scan';
import { requireProcess } from '../kernel/preflight';
import { scanCgroups, type CgroupNames } from './cgroups';
import { aligned4, SockDecoder, sockNetns, TWO_32, type OnRecord } from './sock-decoder';
import { sameOwner, type SocketInfo } from '../sockets';
import type { TcpState } from '../tcp-states';

export { networkNamespaces, stateMask } from './native-scan';

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

/**
 * A scan's records (struct sl_sock): `owned`, one per (pid, fd) holding a
 * socket, so a socket held twice has two; `orphans`, iter/tcp's records of the
 * namespaces with unowned sockets, owned ones among them too (skip those whose
 * cookie is in `ownedCookies`; a cookie past 2^53 is NaN there).
 */
export interface RawScan {
  owned: Buffer;
  ownedCookies: Set<number>;
  orphans: Buffer[];
}

/** Where the last scan's time went (benchmarks print it). */
export interface ScanStats {
  /** Waiting for the kernel: iter/task_file beside each netns's census, then any iter/tcp runs. */
  kernelMs: number;
  /** Decoding and merging records in JavaScript. */
  decodeMs: number;
  /** Namespaces where iter/tcp had to run (the census found a socket no process holds). */
  tcpScans: number;
  /** Namespaces whose census came from sock_diag: census_ehash could not answer (LISTEN or CLOSE asked, or its walk was unsure). */
  diagCensuses: number;
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
  lastStats: ScanStats = { kernelMs: 0, decodeMs: 0, tcpScans: 0, diagCensuses: 0, records: 0 };

  constructor(options: { btfPath?: string } = {}) {
    this.native = openNativeScanner(options);
  }

  /**
   * Starts loading the iterators on a pool thread now, instead of with the
   * first scan: a caller that loads modules or parses arguments meanwhile
   * (the CLI) hides the load (the kernel relocates and verifies the light
   * skeleton) behind it.
   * A load failure is reported by that first scan.
   */
  preload(): void {
    this.native.preload();
  }

  /** Runs one native scan: raw records (or cookies, for kind 'cookies'). */
  private raw(request: NativeScanRequest): Promise<Buffer> {
    return runScan(this.native, request);
  }

  /**
   * The sockets in `mask`'s states in one netns: census_ehash's walk of the
   * established hash, or sock_diag's census where the walk cannot answer
   * (LISTEN or CLOSE asked, or a chain changed under it). Undefined when
   * neither can (every state asked: iter/tcp is needed anyway; or the
   * namespace is gone).
   */
  private async socketCensus(mask: number, netnsPath: string | undefined, stats: ScanStats): Promise<SocketCensus | undefined> {
    if (mask === 0) return undefined;
    try {
      return censusOfWalk(await this.raw({ kind: 'ehash', stateMask: mask, ...(netnsPath && { netnsPath }) }));
    } catch {
      // sock_diag's census next (it will also say if the namespace is gone); the
      // walk refuses the states it cannot see (Scanner::WalkEhash)
    }
    stats.diagCensuses++;
    let buf: Buffer;
    try {
      buf = await this.raw({ kind: 'cookies', stateMask: mask, ...(netnsPath && { netnsPath }) });
    } catch {
      return undefined; // iter/tcp will say what is wrong, or find the process gone
    }
    // Through a typed-array view: readUInt32LE per word was an interpreted call
    // per word until TurboFan compiled it.
    const aligned = aligned4(buf);
    const words = new Uint32Array(aligned.buffer, aligned.byteOffset, aligned.length >> 2);
    const cookies = new Float64Array(words.length >> 1);
    for (let i = 0; i < cookies.length; i++) {
      const hi = words[2 * i + 1]!;
      if (hi >= 0x200000) return undefined; // not exact as a number: let iter/tcp decide
      cookies[i] = hi * TWO_32 + words[2 * i]!;
    }
    return { cookies, uncookied: [] };
  }

  /**
   * The records of every TCP socket matching the options: sockets held by
   * processes from iter/task_file (any netns; one record per (pid, fd)), and,
   * without `pid`, orphans of every netns that has a process from iter/tcp
   * (both iterators assign cookies, so the order does not matter). With a state
   * filter, a census of each netns (socketCensus) runs beside iter/task_file,
   * and iter/tcp (which locks every socket of the netns) runs only where the
   * census found a socket no process holds: for CLOSE_WAIT, usually nowhere.
   * Fills lastStats but for decodeMs.
   */
  async scanRaw(options: ScanOptions = {}): Promise<RawScan> {
    if (options.pid !== undefined) requireProcess(options.pid);
    const mask = stateMask(options.states);
    const stats: ScanStats = { kernelMs: 0, decodeMs: 0, tcpScans: 0, diagCensuses: 0, records: 0 };
    const t0 = performance.now();
    // Started first: the pool thread loads the BPF object meanwhile.
    const files = this.raw({ kind: 'files', stateMask: mask, ...(options.pid !== undefined && { pid: options.pid }) });
    const own = ownNetns();
    // Our namespace's census starts before the walk of /proc for the others.
    const ownCensus = options.pid === undefined ? this.socketCensus(mask, undefined, stats) : undefined;
    const namespaces = options.pid === undefined ? [...networkNamespaces()] : [];
    const [owned, ...censuses] = await Promise.all([
      files,
      ...namespaces.map(([ino, nsPath]) => (ino === own ? ownCensus : this.socketCensus(mask, netnsTarget(ino, nsPath, own).netnsPath, stats))),
    ]);
    stats.kernelMs += performance.now() - t0;
    options.onRaw?.(owned);
    stats.records += owned.length / SOCK_SIZE;
    const ownedCookies = new Set<number>();
    const decoder = new SockDecoder(owned);
    for (let at = 0; at + SOCK_SIZE <= owned.length; at += SOCK_SIZE) ownedCookies.add(decoder.cookieNumber(at));
    const unowned = namespaces.filter(([ino], i) => !allHeld(censuses[i], ino, ownedCookies, owned));
    const orphans: Buffer[] = [];
    const orphanScans = scanEachNetns(this.native, { kind: 'tcp', stateMask: mask }, unowned);
    for (;;) {
      const t1 = performance.now();
      const next = await orphanScans.next();
      stats.kernelMs += performance.now() - t1;
      if (next.done) break;
      stats.tcpScans++;
      stats.records += next.value.buf.length / SOCK_SIZE;
      options.onRaw?.(next.value.buf);
      orphans.push(next.value.buf);
    }
    stats.decodeMs = performance.now() - t0 - stats.kernelMs;
    this.lastStats = stats;
    return { owned, ownedCookies, orphans };
  }

  /** Every TCP socket matching the options (see scanRaw), with all its owners, merged by cookie. */
  async scan(options: ScanOptions = {}): Promise<Map<string, SocketInfo>> {
    const raw = await this.scanRaw(options);
    const t0 = performance.now();
    const sockets = decodeScan(raw);
    this.lastStats.decodeMs += performance.now() - t0;
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
      if (isVanishedNetns(err)) return undefined; // its last process exited
      throw err;
    }
  }

  /**
   * Every TCP socket of one network namespace (`netnsPath`: /proc/PID/ns/net of a
   * process in it), owners not resolved: what port accounting needs, at the cost
   * of one iter/tcp. Undefined when the namespace can no longer be entered.
   */
  async scanNetns(netnsPath: string, options: { states?: readonly TcpState[] } = {}): Promise<SocketInfo[] | undefined> {
    return this.inNetns(netnsPath, async (path) => {
      const buf = await this.raw({ kind: 'tcp', stateMask: stateMask(options.states), ...(path && { netnsPath: path }) });
      const sockets: SocketInfo[] = [];
      decodeEach(buf, (info) => sockets.push(info));
      return sockets;
    });
  }

  /** The port census of one network namespace: nothing decoded per socket. Undefined when it is gone. */
  async census(netns: number, netnsPath: string): Promise<PortCensus | undefined> {
    return this.inNetns(netnsPath, async (path) => {
      const buf = await this.raw({ kind: 'census', ...(path && { netnsPath: path }) });
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

/**
 * One namespace's census: its sockets in the states asked, by cookie, and by
 * endpoints those with no cookie yet (census_ehash reads a socket's cookie but
 * cannot assign one; iter/task_file assigns them, maybe in the same instant).
 */
export interface SocketCensus {
  cookies: Float64Array;
  /** endpointKey() of each socket without a cookie, or with one past 2^53. */
  uncookied: string[];
}

/**
 * A socket's endpoints as a string, from a record of either layout: in one
 * namespace, established and closing sockets never share them.
 */
function endpointKey(buf: Buffer, at: number, layout: typeof SOCK | typeof CENSUS_SOCK): string {
  const saddr = at + layout.saddr.offset;
  return (
    buf.toString('latin1', saddr, saddr + 16) +
    buf.toString('latin1', at + layout.daddr.offset, at + layout.daddr.offset + 16) +
    String.fromCharCode(buf.readUInt16LE(at + layout.sport.offset), buf.readUInt16LE(at + layout.dport.offset), buf.readUInt16LE(at + layout.family.offset))
  );
}

/** census_ehash's records (struct sl_census_sock) as a census. */
export function censusOfWalk(buf: Buffer): SocketCensus {
  const n = Math.floor(buf.length / CENSUS_SOCK_SIZE);
  const cookies = new Float64Array(n);
  const uncookied: string[] = [];
  // Through a typed-array view, as sock_diag's cookies: a one-shot snapshot runs this cold.
  const aligned = aligned4(buf);
  const words = new Uint32Array(aligned.buffer, aligned.byteOffset, aligned.length >> 2);
  let found = 0;
  for (let i = 0, at = 0; i < n; i++, at += CENSUS_SOCK_SIZE) {
    const w = (at + CENSUS_SOCK.cookie.offset) >> 2;
    const lo = words[w]!;
    const hi = words[w + 1]!;
    if ((lo === 0 && hi === 0) || hi >= 0x200000) uncookied.push(endpointKey(aligned, at, CENSUS_SOCK));
    else cookies[found++] = hi * TWO_32 + lo;
  }
  return { cookies: cookies.subarray(0, found), uncookied };
}

/** Whether every socket of namespace `ino`'s census is held by a process: by cookie, or else by endpoints. */
export function allHeld(census: SocketCensus | undefined, ino: number, ownedCookies: Set<number>, owned: Buffer): boolean {
  if (!census || !census.cookies.every((cookie) => ownedCookies.has(cookie))) return false;
  if (census.uncookied.length === 0) return true;
  const held = new Set<string>();
  for (let at = 0; at + SOCK_SIZE <= owned.length; at += SOCK_SIZE) {
    if (sockNetns(owned, at) === ino) held.add(endpointKey(owned, at, SOCK));
  }
  return census.uncookied.every((key) => held.has(key));
}

/**
 * A scan's records as SocketInfo objects by cookie: owned sockets in the order
 * of their first record, with every (pid, fd) holding them, then orphans.
 */
export function decodeScan(raw: RawScan): Map<string, SocketInfo> {
  const { owned, ownedCookies, orphans } = raw;
  const sockets = new Map<string, SocketInfo>();
  const cgroups = scanCgroups(raw);
  decodeEach(owned, (info) => {
    const known = sockets.get(info.cookie);
    if (!known) sockets.set(info.cookie, info);
    else for (const o of info.owners) if (!known.owners.some((k) => sameOwner(k, o))) known.owners.push(o);
  }, undefined, cgroups);
  // iter/tcp's copies of owned sockets need no decoding.
  const isOwned = (cookie: number): boolean => !Number.isNaN(cookie) && ownedCookies.has(cookie);
  for (const buf of orphans) decodeEach(buf, (info) => sockets.set(info.cookie, info), isOwned, cgroups);
  return sockets;
}

/** Decodes a buffer of records; those whose cookie `skip` accepts are not decoded at all. */
function decodeEach(buf: Buffer, onRecord: OnRecord, skip?: (cookie: number) => boolean, cgroups?: CgroupNames): void {
  const decoder = new SockDecoder(buf, cgroups);
  for (let at = 0; at + SOCK_SIZE <= buf.length; at += SOCK_SIZE) {
    if (!skip?.(decoder.cookieNumber(at))) decoder.decode(at, onRecord);
  }
}
