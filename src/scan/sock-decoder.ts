/**
 * The one reader of the scan iterators' struct sl_sock records (bpf/scan.bpf.c),
 * by the generated layout: field readers for callers that read a few fields of
 * many records (ports, state counts, the leak engine's passes), and SockDecoder,
 * which makes SocketInfo objects or their JSON (snapshot).
 *
 * Longer than 400 lines because both readers of one record belong together:
 * a change to struct sl_sock is then a change to this file alone.
 */
import { formatIPv4, formatIPv6 } from '../address';
import { inCgroup, type CgroupFilter } from '../cgroup-path';
import { cString, cStringEquals } from '../c-string';
import { monotonicNowNs } from '../clock';
import { cookieKeyAt, type CookieKey } from '../cookie-map';
import { FAMILY, SOCK, SOCK_FLAGS } from '../generated/layout';
import { encoded, type JsonBytes } from '../json-bytes';
import { CgroupNames } from './cgroups';
import type { Owner, SocketInfo } from '../sockets';
import { TIME_WAIT_MS, tcpStateName, type TcpState } from '../tcp-states';

const AF_INET = FAMILY.INET;
/** TCP_TIMEWAIT_LEN: how long the kernel keeps a TIME_WAIT socket. */

/**
 * A decoded struct sl_sock: the socket (its owners: the (pid, fd) this record
 * was found through, if any) and its cookie as a number (NaN past 2^53).
 */
export type OnRecord = (info: SocketInfo, cookie: number) => void;

export const TWO_32 = 4294967296;
/** Distinct endpoints remembered per scan: peers and listeners repeat, ephemeral ends do not. */
const ENDPOINT_CACHE = 4096;

/** Cookie of the record at `at` as a key. */
export function sockCookieKey(buf: Buffer, at: number): CookieKey {
  return cookieKeyAt(buf, at + SOCK.cookie.offset);
}

/** Low 32 bits of the record's cookie: enough to skip most records cheaply. */
export function sockCookieLow(buf: Buffer, at: number): number {
  return buf.readUInt32LE(at + SOCK.cookie.offset);
}

/** The record's cookie as decimal text. */
export function sockCookieText(buf: Buffer, at: number): string {
  return buf.readBigUInt64LE(at + SOCK.cookie.offset).toString();
}

/** When the socket was last active (CLOSE_WAIT: when it entered it), kernel monotonic ns. */
export function sockLastActiveNs(buf: Buffer, at: number): bigint {
  return buf.readBigUInt64LE(at + SOCK.last_active_ns.offset);
}

export function sockNetns(buf: Buffer, at: number): number {
  return buf.readUInt32LE(at + SOCK.netns_ino.offset);
}

/** The kernel's TCP state number (tcp-states.ts names it). */
export function sockStateNumber(buf: Buffer, at: number): number {
  return buf.readUInt8(at + SOCK.state.offset);
}

export function sockFamily(buf: Buffer, at: number): 4 | 6 {
  return buf.readUInt16LE(at + SOCK.family.offset) === AF_INET ? 4 : 6;
}

/** The record's local (or remote) address: 16 bytes, IPv4 in the first 4 (a view, no copy). */
export function sockAddress(buf: Buffer, at: number, end: 'local' | 'remote'): Buffer {
  const field = end === 'local' ? SOCK.saddr : SOCK.daddr;
  return buf.subarray(at + field.offset, at + field.offset + 16);
}

/** Copies the record's local then remote address (16 bytes each) into `to` at `toAt`. */
export function sockCopyAddresses(buf: Buffer, at: number, to: Uint8Array, toAt: number): void {
  buf.copy(to, toAt, at + SOCK.saddr.offset, at + SOCK.saddr.offset + 16);
  buf.copy(to, toAt + 16, at + SOCK.daddr.offset, at + SOCK.daddr.offset + 16);
}

export function sockLocalPort(buf: Buffer, at: number): number {
  return buf.readUInt16LE(at + SOCK.sport.offset);
}

export function sockRemotePort(buf: Buffer, at: number): number {
  return buf.readUInt16LE(at + SOCK.dport.offset);
}

/** ms until the record's timer fires (keepalive, or TIME_WAIT's end); null without one. */
export function sockTimerMs(buf: Buffer, at: number): number | null {
  return buf.readUInt8(at + SOCK.flags.offset) & SOCK_FLAGS.TIMER ? buf.readUInt32LE(at + SOCK.timer_ms.offset) : null;
}

/** A TIME_WAIT socket's age from its timer (which counts down from TIME_WAIT_MS). */
export function timeWaitAgeMs(timerMs: number): number {
  return Math.max(0, TIME_WAIT_MS - timerMs);
}

/** The (pid, fd) the record was found through, its comm through `intern`; undefined for iter/tcp's records. */
export function sockOwner(buf: Buffer, at: number, intern: (comm: string) => string): Owner | undefined {
  if (!(buf.readUInt8(at + SOCK.flags.offset) & SOCK_FLAGS.OWNED)) return undefined;
  const comm = intern(cString(buf, at + SOCK.comm.offset, SOCK.comm.size));
  return { pid: buf.readUInt32LE(at + SOCK.pid.offset), comm, fd: buf.readInt32LE(at + SOCK.fd.offset) };
}

/** Whether the record was found through holder (pid, fd, comm) (compared in place: no string made). */
export function sockNamesOwner(buf: Buffer, at: number, pid: number, fd: number, comm: string): boolean {
  if (!(buf.readUInt8(at + SOCK.flags.offset) & SOCK_FLAGS.OWNED)) return false;
  if (buf.readUInt32LE(at + SOCK.pid.offset) !== pid || buf.readInt32LE(at + SOCK.fd.offset) !== fd) return false;
  return cStringEquals(buf, at + SOCK.comm.offset, SOCK.comm.size, comm);
}

/** `buf`, or a copy of it where it is not 4-byte aligned (the addon's buffers are): what 32-bit views need. */
export function aligned4(buf: Buffer): Buffer {
  return buf.byteOffset % 4 === 0 ? buf : Buffer.from(buf);
}

/** Encodes `text` into `cache` under `key` and returns it: a cache miss of writeJson()'s segments. */
function remember<K>(cache: Map<K, Uint8Array>, key: K, text: string): Uint8Array {
  const bytes = encoded(text);
  cache.set(key, bytes);
  return bytes;
}

/** JSON text between the fields writeJson() fills in, encoded once (keepalive off: the usual leak). */
const JSON_TEXT = {
  open: encoded('{"cookie":"'),
  comma: encoded(','),
  ownerEnd: encoded('}'),
  recvQ: encoded('],"creator":null,"recvQ":'),
  sendQ: encoded(',"sendQ":'),
  keepaliveOff: encoded(',"keepalive":false,"keepaliveProbeInMs":null,"keepaliveReapByMs":null,"stateAgeMs":'),
  keepaliveOn: encoded(',"keepalive":true,"keepaliveProbeInMs":'),
  reapBy: encoded(',"keepaliveReapByMs":'),
  age: encoded(',"stateAgeMs":'),
};

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
export class SockDecoder {
  private readonly u8: Uint8Array;
  private readonly u16: Uint16Array;
  private readonly u32: Uint32Array;
  private readonly i32: Int32Array;
  private readonly addresses = new Map<string | number, string>();
  /** Whole IPv4 endpoints by (address, port), while they repeat (many sockets to one peer, or on one listener). */
  private readonly endpoints = new Map<number, string>();
  private readonly comms = new Map<number, string>();
  /** writeJson()'s text that repeats, encoded once per decoder: see each method. */
  private readonly localJsons = new Map<string | number, Uint8Array>();
  private readonly remoteJsons = new Map<string | number, Uint8Array>();
  private readonly netnsJsons = new Map<number, Uint8Array>();
  private readonly ownerJsons = new Map<number, Uint8Array>();
  private readonly ownerEndJsons = new Map<number, Uint8Array>();
  private readonly tailJsons = new Map<number, Uint8Array>();
  private readonly nowNs = monotonicNowNs();

  /** `cgroups` resolves holders' cgroups (one per scan: see CgroupNames). */
  constructor(
    private readonly buf: Buffer,
    private readonly cgroups: CgroupNames = new CgroupNames(),
  ) {
    const aligned = aligned4(buf);
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
      text = cString(this.buf, at + F.comm, SOCK.comm.size);
      this.comms.set(pid, text);
    }
    return text;
  }

  /** The TCP state of the record at `at`. */
  state(at: number): TcpState {
    return tcpStateName(this.u8[at + F.state]!);
  }

  family(at: number): 4 | 6 {
    return this.u16[(at >> 1) + F.family] === AF_INET ? 4 : 6;
  }

  local(at: number, family = this.family(at)): string {
    return this.endpoint(family, at + F.saddr, this.u16[(at >> 1) + F.sport]!);
  }

  remote(at: number, family = this.family(at)): string {
    return this.endpoint(family, at + F.daddr, this.u16[(at >> 1) + F.dport]!);
  }

  netns(at: number): number {
    return this.u32[(at >> 2) + F.netns]!;
  }

  uid(at: number): number {
    return this.u32[(at >> 2) + F.uid]!;
  }

  recvQ(at: number): number {
    return this.u32[(at >> 2) + F.recvQ]!;
  }

  sendQ(at: number): number {
    return this.u32[(at >> 2) + F.sendQ]!;
  }

  keepalive(at: number): boolean {
    return (this.u8[at + F.flags]! & SOCK_FLAGS.KEEPALIVE) !== 0;
  }

  /** ms until the record's timer fires (keepalive, or TIME_WAIT's end); null without one. */
  private timerMs(at: number): number | null {
    return this.u8[at + F.flags]! & SOCK_FLAGS.TIMER ? this.u32[(at >> 2) + F.timerMs]! : null;
  }

  /** ms until the next keepalive probe; null with keepalive off. */
  keepaliveProbeInMs(at: number, state = this.state(at)): number | null {
    return this.keepalive(at) && state !== 'TIME_WAIT' ? this.timerMs(at) : null;
  }

  /** ms after which keepalive reaps the socket even if the peer host is gone: probe + probes × interval. */
  keepaliveReapByMs(at: number, probeInMs = this.keepaliveProbeInMs(at)): number | null {
    return probeInMs !== null ? probeInMs + this.u8[at + F.probes]! * this.u32[(at >> 2) + F.intvlMs]! : null;
  }

  /** How long the socket has been in its state, estimated from the kernel's timestamps; null when unknown. */
  stateAgeMs(at: number, state = this.state(at)): number | null {
    if (state === 'TIME_WAIT') {
      const timerMs = this.timerMs(at);
      return timerMs !== null ? timeWaitAgeMs(timerMs) : null;
    }
    if (state !== 'CLOSE_WAIT') return null;
    const w = (at >> 2) + F.lastActiveLo;
    const lastActiveNs = this.u32[w + 1]! * TWO_32 + this.u32[w]!;
    return lastActiveNs > 0 ? Math.max(0, Math.round((this.nowNs - lastActiveNs) / 1e6)) : null;
  }

  /** The (pid, fd) the record was found through; null for iter/tcp's records. */
  owner(at: number): Owner | null {
    if (!(this.u8[at + F.flags]! & SOCK_FLAGS.OWNED)) return null;
    const pid = this.u32[(at >> 2) + F.pid]!;
    return { pid, comm: this.comm(pid, at), fd: this.i32[(at >> 2) + F.fd]!, ...this.cgroups.ofPid(pid) };
  }

  /** The record as a SocketInfo, its owners the record's own (pid, fd) if any. */
  decode(at: number, onRecord: OnRecord): void {
    const state = this.state(at);
    const family = this.family(at);
    const keepaliveProbeInMs = this.keepaliveProbeInMs(at, state);
    const stateAgeMs = this.stateAgeMs(at, state);
    const owner = this.owner(at);
    const cookie = this.cookieNumber(at);
    const info: SocketInfo = {
      cookie: this.cookie(at, cookie),
      state,
      family,
      local: this.local(at, family),
      remote: this.remote(at, family),
      netns: this.netns(at),
      owners: owner ? [owner] : [],
      creator: null,
      recvQ: this.recvQ(at),
      sendQ: this.sendQ(at),
      keepalive: this.keepalive(at),
      keepaliveProbeInMs,
      keepaliveReapByMs: this.keepaliveReapByMs(at, keepaliveProbeInMs),
      stateAgeMs,
      ageEstimated: stateAgeMs !== null,
      uid: this.uid(at),
    };
    onRecord(info, cookie);
  }

  /**
   * Appends the record as JSON to `out`: exactly what JSON.stringify writes
   * for the SocketInfo decode() makes of it (same fields, same order;
   * test/snapshot-json.test.ts holds them to it), its owners those of the
   * records at `owners` (this buffer's offsets; the same (pid, fd) once).
   * `snapshot --json` writes sockets this way, without making objects or
   * strings per socket: the text between numbers that vary (cookie, ports,
   * fd, queues, age) is encoded once per value that repeats (state and local
   * address, remote address, netns, holder, uid). `stateAgeMs`: the record's,
   * which the caller has.
   */
  writeJson(out: JsonBytes, at: number, owners: readonly number[], stateAgeMs: number | null): void {
    const family = this.family(at);
    const cookie = this.cookieNumber(at);
    out.bytes(JSON_TEXT.open);
    if (Number.isNaN(cookie)) out.bytes(encoded(this.cookie(at, cookie)));
    else out.uint(cookie);
    out.bytes(this.localJson(at, family));
    out.uint(this.u16[(at >> 1) + F.sport]!);
    out.bytes(this.remoteJson(at, family));
    out.uint(this.u16[(at >> 1) + F.dport]!);
    out.bytes(this.netnsJson(at));
    for (let i = 0; i < owners.length; i++) {
      if (this.heldBefore(owners, i)) continue;
      if (i > 0) out.bytes(JSON_TEXT.comma);
      out.bytes(this.ownerJson(owners[i]!));
      out.uint(this.i32[(owners[i]! >> 2) + F.fd]!);
      out.bytes(this.ownerEndJson(owners[i]!));
    }
    out.bytes(JSON_TEXT.recvQ);
    out.uint(this.recvQ(at));
    out.bytes(JSON_TEXT.sendQ);
    out.uint(this.sendQ(at));
    if (this.keepalive(at)) {
      const probeInMs = this.keepaliveProbeInMs(at);
      out.bytes(JSON_TEXT.keepaliveOn);
      out.uintOrNull(probeInMs);
      out.bytes(JSON_TEXT.reapBy);
      out.uintOrNull(this.keepaliveReapByMs(at, probeInMs));
      out.bytes(JSON_TEXT.age);
    } else {
      out.bytes(JSON_TEXT.keepaliveOff);
    }
    out.uintOrNull(stateAgeMs);
    out.bytes(this.tailJson(stateAgeMs !== null, this.uid(at)));
  }

  /** Whether a record before owners[i] was found through the same (pid, fd). */
  private heldBefore(owners: readonly number[], i: number): boolean {
    const pid = this.u32[(owners[i]! >> 2) + F.pid];
    const fd = this.i32[(owners[i]! >> 2) + F.fd];
    for (let j = 0; j < i; j++) {
      if (this.u32[(owners[j]! >> 2) + F.pid] === pid && this.i32[(owners[j]! >> 2) + F.fd] === fd) return true;
    }
    return false;
  }

  /** `","state":"S","family":F,"local":"ADDRESS:`, per state and local address. */
  private localJson(at: number, family: 4 | 6): Uint8Array {
    const state = this.u8[at + F.state]!;
    const key = family === 4 ? this.u32[(at + F.saddr) >> 2]! * 32 + state : `${state} ${this.buf.toString('latin1', at + F.saddr, at + F.saddr + 16)}`;
    return (
      this.localJsons.get(key) ??
      remember(this.localJsons, key, `","state":"${tcpStateName(state)}","family":${family},"local":"${this.address(family, at + F.saddr)}:`)
    );
  }

  /** `","remote":"ADDRESS:`, per remote address. */
  private remoteJson(at: number, family: 4 | 6): Uint8Array {
    const key = family === 4 ? this.u32[(at + F.daddr) >> 2]! : this.buf.toString('latin1', at + F.daddr, at + F.daddr + 16);
    return this.remoteJsons.get(key) ?? remember(this.remoteJsons, key, `","remote":"${this.address(family, at + F.daddr)}:`);
  }

  /** `","netns":N,"owners":[`, per netns. */
  private netnsJson(at: number): Uint8Array {
    const netns = this.netns(at);
    return this.netnsJsons.get(netns) ?? remember(this.netnsJsons, netns, `","netns":${netns},"owners":[`);
  }

  /** `{"pid":P,"comm":C,"fd":`, per holder (a comm is any 15 bytes: escaped here). */
  private ownerJson(record: number): Uint8Array {
    const pid = this.u32[(record >> 2) + F.pid]!;
    return this.ownerJsons.get(pid) ?? remember(this.ownerJsons, pid, `{"pid":${pid},"comm":${JSON.stringify(this.comm(pid, record))},"fd":`);
  }

  /** `,"cgroup":"PATH",...}` (what CgroupNames found) or `}`, per holder. */
  private ownerEndJson(record: number): Uint8Array {
    const pid = this.u32[(record >> 2) + F.pid]!;
    let bytes = this.ownerEndJsons.get(pid);
    if (bytes === undefined) {
      const fields = this.cgroups.ofPid(pid);
      bytes = fields ? remember(this.ownerEndJsons, pid, `,${JSON.stringify(fields).slice(1)}`) : JSON_TEXT.ownerEnd;
      this.ownerEndJsons.set(pid, bytes);
    }
    return bytes;
  }

  /** Whether a holder of the record at `record` is in the filter's cgroup and container. */
  holderIn(record: number, filter: CgroupFilter): boolean {
    return inCgroup(filter, this.cgroups.ofPid(this.u32[(record >> 2) + F.pid]!));
  }

  /** `,"ageEstimated":B,"uid":U}`, per uid and B. */
  private tailJson(estimated: boolean, uid: number): Uint8Array {
    const key = uid * 2 + (estimated ? 1 : 0);
    return this.tailJsons.get(key) ?? remember(this.tailJsons, key, `,"ageEstimated":${estimated},"uid":${uid}}`);
  }
}
