/**
 * The leak engine's per-leak state (leak-watcher.ts) as columns of typed
 * arrays, one slot per open leak, with a cookie → slot hash index: ~130 bytes
 * a leak, where one object per leak with its strings, owner objects and Map
 * entries took more than twice that (docs/benchmarks.md), and nothing in it
 * for the garbage collector to trace.
 * 200k of these are the first incident.
 *
 * Addresses are kept as bytes and formatted only when a record is made;
 * owner comms and cgroups are ids into small shared tables; a leak with several holders
 * keeps its list in a side map (most have one). Slots also form a list in
 * report order, which the agent's bound evicts from the front of.
 *
 * A leak's details are taken from its iterator record (struct sl_sock) in
 * add(), through sock-decoder.ts (addresses and ports are kept as bytes until
 * a record goes out).
 *
 * Longer than 400 lines because the columns, their growth and every reader of them
 * stay in one class, so that a column added is a change to this file alone.
 */
import { formatEndpoint } from '../address';
import { namesOwner, type RawSock } from '../scan/close-wait-scan';
import { CookieIndex, cookieText, type CookieKey } from '../cookie-map';
import { sockCopyAddresses, sockLocalPort, sockRemotePort } from '../scan/sock-decoder';
import type { LeakRecord } from '../watch-records';
import type { CgroupFields } from '../scan/cgroups';
import type { Creator, Owner } from '../sockets';

/** bits: IPv6, keepalive on, entry time estimated, has holders, its leak record not yet handed out, removed while queued, not yet reported. */
const V6 = 1;
const KEEPALIVE = 2;
const ESTIMATED = 4;
const HELD = 8;
const QUEUED = 16;
const DEAD = 32;
const TENTATIVE = 64;
/** Distinct comms kept before the table is rebuilt from the live slots. */
const COMM_LIMIT = 4096;

/**
 * Growth of the columns: 1.25x (a growth holds old and new columns at once,
 * and the last one's spare slots stay); a burst (a restart's 200k) is
 * reserved in one step instead, see reserve().
 */
const grown = (cap: number, needed: number): number => Math.max(1024, needed, Math.ceil(cap * 1.25));

function resized<T extends Float64Array | Uint32Array | Int32Array | Uint16Array | Uint8Array>(a: T, n: number, per = 1): T {
  const b = new (a.constructor as new (n: number) => T)(n * per);
  b.set(a.subarray(0, Math.min(a.length, n * per)));
  return b;
}

export class LeakTable {
  private cap = 0;
  private count = 0;
  /** Slots not free: open, tentative, or removed with their record still pending. */
  private inUse = 0;
  // Columns, indexed by slot.
  private cookie = new Float64Array(0); // NaN: a cookie past 2^53, in `bigCookie`
  private entered = new Float64Array(0);
  private bits = new Uint8Array(0);
  /** 32 bytes a slot: local address, then remote (IPv4 in the first 4 of each 16). */
  private addr = new Uint8Array(0);
  /** 2 a slot: local port, remote port. */
  private port = new Uint16Array(0);
  private netns = new Uint32Array(0);
  private uid = new Uint32Array(0);
  private recvQ = new Uint32Array(0);
  private sendQ = new Uint32Array(0);
  private probeIn = new Uint32Array(0); // keepalive timer, ms: valid with KEEPALIVE and a finite reapBy
  private reapBy = new Float64Array(0); // NaN: no keepalive timer
  private ownerPid = new Int32Array(0);
  private ownerFd = new Int32Array(0);
  private ownerComm = new Int32Array(0);
  /** 1 + index into `places`; 0: cgroup unknown. */
  private ownerCgroup = new Int32Array(0);
  private creator: Array<Creator | null> = [];
  /** Report order (doubly linked); `next` also chains free slots. */
  private prev = new Int32Array(0);
  private next = new Int32Array(0);
  private head = -1;
  private tail = -1;
  private free = -1;
  /** The engine's marks: the rescan that last saw a leak, and how many of its owners it has confirmed (-1: they changed; -2: that pass found it new). */
  scanMark = new Uint32Array(0);
  scanConfirmed = new Int32Array(0);
  /** Holder lists of leaks with more than one holder (arrays never changed in place). */
  private readonly several = new Map<number, readonly Owner[]>();
  private readonly bigCookie = new Map<number, string>();
  private readonly bigSlot = new Map<string, number>();
  /** Cookie → slot, over the `cookie` column (cookies past 2^53 are in bigSlot). */
  private readonly index = new CookieIndex();
  private comms: string[] = [];
  private commIds = new Map<string, number>();
  private commLimit = COMM_LIMIT;
  private places: CgroupFields[] = [];
  private placeIds = new Map<string, number>();
  private placeLimit = COMM_LIMIT;

  /** Open (reported) leaks. */
  get size(): number {
    return this.count;
  }

  /** Whether `key` is an open, reported leak (a CookieSet, for scan passes). */
  has(key: CookieKey): boolean {
    const s = this.slotOf(key);
    return s >= 0 && !(this.bits[s]! & TENTATIVE);
  }

  *keys(): Generator<CookieKey> {
    for (const s of this.slots()) yield this.cookieKey(s);
  }

  /** The slot of an open leak; -1 when there is none. */
  slotOf(key: CookieKey): number {
    return typeof key === 'string' ? (this.bigSlot.get(key) ?? -1) : this.index.find(key);
  }

  private reindex(): void {
    this.index.reset(this.cookie, this.cap, 10);
    for (let s = this.head; s >= 0; s = this.next[s]!) if (!Number.isNaN(this.cookie[s]!)) this.index.add(s);
  }

  /** Room for `more` leaks beyond those open (or being reported) now, in at most one growth. */
  reserve(more: number): void {
    if (this.inUse + more > this.cap) this.grow(this.inUse + more);
  }

  private grow(needed = 0): void {
    const n = grown(this.cap, needed);
    this.cookie = resized(this.cookie, n);
    this.entered = resized(this.entered, n);
    this.bits = resized(this.bits, n);
    this.addr = resized(this.addr, n, 32);
    this.port = resized(this.port, n, 2);
    this.netns = resized(this.netns, n);
    this.uid = resized(this.uid, n);
    this.recvQ = resized(this.recvQ, n);
    this.sendQ = resized(this.sendQ, n);
    this.probeIn = resized(this.probeIn, n);
    this.reapBy = resized(this.reapBy, n);
    this.ownerPid = resized(this.ownerPid, n);
    this.ownerFd = resized(this.ownerFd, n);
    this.ownerComm = resized(this.ownerComm, n);
    this.ownerCgroup = resized(this.ownerCgroup, n);
    this.prev = resized(this.prev, n);
    this.next = resized(this.next, n);
    this.scanMark = resized(this.scanMark, n);
    this.scanConfirmed = resized(this.scanConfirmed, n);
    for (let s = this.cap; s < n; s++) this.creator.push(null);
    for (let s = n - 1; s >= this.cap; s--) {
      this.next[s] = this.free;
      this.free = s;
    }
    this.cap = n;
    this.reindex();
  }

  /**
   * A leak about to be reported, from its iterator record (`sock`): tentative
   * (found by slotOf(), invisible to size, has(), slots()) until report() or
   * remove(). Returns its slot.
   */
  add(cookie: CookieKey, sock: RawSock, creator: Creator | null, estimated: boolean, enteredNs: number): number {
    if (this.free < 0) this.grow();
    const s = this.free;
    this.free = this.next[s]!;
    this.inUse++;
    const { buf, decoder, at } = sock;
    const keepalive = decoder.keepalive(at);
    const probeInMs = decoder.keepaliveProbeInMs(at);
    this.bits[s] = (decoder.family(at) === 6 ? V6 : 0) | (keepalive ? KEEPALIVE : 0) | (estimated ? ESTIMATED : 0) | TENTATIVE;
    // Addresses and ports as the record has them: formatted only when a record goes out.
    sockCopyAddresses(buf, at, this.addr, s * 32);
    this.port[2 * s] = sockLocalPort(buf, at);
    this.port[2 * s + 1] = sockRemotePort(buf, at);
    this.netns[s] = decoder.netns(at);
    this.uid[s] = decoder.uid(at);
    this.recvQ[s] = decoder.recvQ(at);
    this.sendQ[s] = decoder.sendQ(at);
    this.probeIn[s] = probeInMs ?? 0;
    this.reapBy[s] = decoder.keepaliveReapByMs(at, probeInMs) ?? NaN;
    this.entered[s] = enteredNs;
    this.creator[s] = creator;
    this.scanMark[s] = 0;
    this.scanConfirmed[s] = 0;
    if (typeof cookie === 'string') {
      this.cookie[s] = NaN;
      this.bigCookie.set(s, cookie);
      this.bigSlot.set(cookie, s);
    } else {
      this.cookie[s] = cookie;
      this.index.add(s);
    }
    this.prev[s] = this.tail;
    this.next[s] = -1;
    if (this.tail >= 0) this.next[this.tail] = s;
    else this.head = s;
    this.tail = s;
    return s;
  }

  /** A tentative leak is reported: open from now on, its record pending until taken(). */
  report(s: number): void {
    this.bits[s] = (this.bits[s]! & ~TENTATIVE) | QUEUED;
    this.count++;
  }

  isTentative(s: number): boolean {
    return (this.bits[s]! & TENTATIVE) !== 0;
  }

  /** Removes an open leak; a slot whose record is still pending stays readable until taken(). */
  remove(s: number): void {
    const c = this.cookie[s]!;
    if (Number.isNaN(c)) this.bigSlot.delete(this.bigCookie.get(s)!);
    else this.index.remove(s);
    const p = this.prev[s]!;
    const n = this.next[s]!;
    if (p >= 0) this.next[p] = n;
    else this.head = n;
    if (n >= 0) this.prev[n] = p;
    else this.tail = p;
    if (!(this.bits[s]! & TENTATIVE)) this.count--;
    if (this.bits[s]! & QUEUED) this.bits[s] = this.bits[s]! | DEAD;
    else this.release(s);
  }

  /** The leak record of slot `s` was handed out: a slot removed meanwhile is free from now on. */
  taken(s: number): void {
    const b = this.bits[s]! & ~QUEUED;
    this.bits[s] = b;
    if (b & DEAD) this.release(s);
  }

  private release(s: number): void {
    this.bits[s] = 0;
    this.several.delete(s);
    this.bigCookie.delete(s);
    this.creator[s] = null;
    this.next[s] = this.free;
    this.free = s;
    this.inUse--;
  }

  /** The oldest-reported open leak's slot; -1 when none is open. */
  first(): number {
    let s = this.head;
    while (s >= 0 && this.bits[s]! & TENTATIVE) s = this.next[s]!;
    return s;
  }

  /** Open slots in report order, copied now (4 bytes a leak), so that removals during the iteration do no harm. */
  slots(): Int32Array {
    const out = new Int32Array(this.count);
    let i = 0;
    for (let s = this.head; s >= 0 && i < out.length; s = this.next[s]!) if (!(this.bits[s]! & TENTATIVE)) out[i++] = s;
    return out;
  }

  /**
   * Open leaks' cookies in report order, listed when the iteration starts (8
   * bytes a leak), for a consumer that pulls lazily while leaks come and go:
   * those gone by the time they are reached are skipped.
   */
  *openCookies(): Generator<CookieKey> {
    const slots = this.slots();
    const keys = new Float64Array(slots.length);
    const big = new Map<number, string>();
    slots.forEach((s, i) => {
      const key = this.cookieKey(s);
      if (typeof key === 'string') big.set(i, key);
      keys[i] = typeof key === 'string' ? NaN : key;
    });
    for (let i = 0; i < keys.length; i++) {
      const key = big.get(i) ?? keys[i]!;
      if (this.has(key)) yield key;
    }
  }

  /**
   * Open leaks per remote endpoint, with one string made per distinct remote,
   * none per leak (an IPv4 remote is keyed by a number; IPv6 ones, rarer, by
   * their text).
   */
  countByRemote(): Map<string, number> {
    const counts = new Map<number | string, { slot: number; count: number }>();
    for (const s of this.slots()) {
      const a = s * 32 + 16;
      const key =
        this.bits[s]! & V6
          ? this.remote(s)
          : (((this.addr[a]! << 24) >>> 0) + (this.addr[a + 1]! << 16) + (this.addr[a + 2]! << 8) + this.addr[a + 3]!) * 65536 + this.port[2 * s + 1]!;
      const c = counts.get(key);
      if (c) c.count++;
      else counts.set(key, { slot: s, count: 1 });
    }
    return new Map([...counts.values()].map((c) => [this.remote(c.slot), c.count]));
  }

  creatorOf(s: number): Creator | null {
    return this.creator[s]!;
  }

  cookieKey(s: number): CookieKey {
    const c = this.cookie[s]!;
    return Number.isNaN(c) ? this.bigCookie.get(s)! : c;
  }

  enteredNs(s: number): number {
    return this.entered[s]!;
  }

  local(s: number): string {
    return formatEndpoint(this.bits[s]! & V6 ? 6 : 4, this.addr.subarray(s * 32, s * 32 + 16), this.port[2 * s]!);
  }

  remote(s: number): string {
    return formatEndpoint(this.bits[s]! & V6 ? 6 : 4, this.addr.subarray(s * 32 + 16, s * 32 + 32), this.port[2 * s + 1]!);
  }

  // ---- holders ----

  private commId(comm: string): number {
    let id = this.commIds.get(comm);
    if (id === undefined) {
      if (this.comms.length >= this.commLimit) this.compactComms();
      id = this.comms.length;
      this.comms.push(comm);
      this.commIds.set(comm, id);
    }
    return id;
  }

  /** Keeps only the comms that slots name (past the limit, most are exited processes' names). */
  private compactComms(): void {
    const old = this.comms;
    this.comms = [];
    this.commIds = new Map();
    this.commLimit = Infinity; // no compaction within this one
    for (let s = 0; s < this.cap; s++) if (this.bits[s]! & HELD) this.ownerComm[s] = this.commId(old[this.ownerComm[s]!]!);
    this.commLimit = Math.max(COMM_LIMIT, 2 * this.comms.length);
  }

  ownerCount(s: number): number {
    return this.bits[s]! & HELD ? (this.several.get(s)?.length ?? 1) : 0;
  }

  /** Holder `i` of slot `s`, made now. */
  ownerAt(s: number, i: number): Owner | undefined {
    const list = this.several.get(s);
    if (list) return list[i];
    if (i !== 0 || !(this.bits[s]! & HELD)) return undefined;
    const place = this.ownerCgroup[s]! > 0 ? this.places[this.ownerCgroup[s]! - 1] : undefined;
    return { pid: this.ownerPid[s]!, comm: this.comms[this.ownerComm[s]!]!, fd: this.ownerFd[s]!, ...place };
  }

  /** Pid and comm of holder `i` without making an object (metrics count 200k of these per scrape). */
  ownerPidAt(s: number, i: number): number {
    const list = this.several.get(s);
    return list ? list[i]!.pid : this.ownerPid[s]!;
  }

  /** The cgroup of holder `i` (shared, not copied); undefined when unknown. */
  ownerPlaceAt(s: number, i: number): CgroupFields | undefined {
    const list = this.several.get(s);
    if (list) return list[i]!.cgroup === undefined ? undefined : (list[i] as CgroupFields);
    return this.ownerCgroup[s]! > 0 ? this.places[this.ownerCgroup[s]! - 1] : undefined;
  }

  ownerCommAt(s: number, i: number): string {
    const list = this.several.get(s);
    return list ? list[i]!.comm : this.comms[this.ownerComm[s]!]!;
  }

  /** Whether the iterator record names holder `i` of slot `s` (compared in place). */
  namesOwnerAt(s: number, i: number, sock: RawSock): boolean {
    const list = this.several.get(s);
    if (list) return list[i] !== undefined && namesOwner(sock, list[i]!.pid, list[i]!.fd, list[i]!.comm);
    return i === 0 && (this.bits[s]! & HELD) !== 0 && namesOwner(sock, this.ownerPid[s]!, this.ownerFd[s]!, this.comms[this.ownerComm[s]!]!);
  }

  owners(s: number): readonly Owner[] {
    const list = this.several.get(s);
    if (list) return list;
    const one = this.ownerAt(s, 0);
    return one ? [one] : [];
  }

  setOwners(s: number, owners: readonly Owner[]): void {
    if (owners.length > 1) this.several.set(s, owners);
    else this.several.delete(s);
    const first = owners[0];
    if (!first) {
      this.bits[s] = this.bits[s]! & ~HELD;
      return;
    }
    this.bits[s] = this.bits[s]! | HELD;
    this.ownerPid[s] = first.pid;
    this.ownerFd[s] = first.fd;
    this.ownerComm[s] = this.commId(first.comm);
    this.ownerCgroup[s] = first.cgroup === undefined ? 0 : this.placeId(first as CgroupFields) + 1;
  }

  /** The holder's cgroup fields, shared by every leak of that cgroup. */
  private placeId(owner: CgroupFields): number {
    let id = this.placeIds.get(owner.cgroup);
    if (id === undefined) {
      if (this.places.length >= this.placeLimit) this.compactPlaces();
      id = this.places.length;
      const { cgroup, containerId, podUid } = owner;
      this.places.push({ cgroup, ...(containerId !== undefined && { containerId }), ...(podUid !== undefined && { podUid }) });
      this.placeIds.set(cgroup, id);
    }
    return id;
  }

  /** Keeps only the cgroups that slots name (past the limit, most are removed containers'). */
  private compactPlaces(): void {
    const old = this.places;
    this.places = [];
    this.placeIds = new Map();
    this.placeLimit = Infinity; // no compaction within this one
    for (let s = 0; s < this.cap; s++) {
      if (this.bits[s]! & HELD && this.ownerCgroup[s]! > 0) this.ownerCgroup[s] = this.placeId(old[this.ownerCgroup[s]! - 1]!) + 1;
    }
    this.placeLimit = Math.max(COMM_LIMIT, 2 * this.places.length);
  }

  /** Its owners now keep only the first `n`. */
  keepOwners(s: number, n: number): void {
    if (n < this.ownerCount(s)) this.setOwners(s, this.owners(s).slice(0, n));
  }

  /** The full record, `stateAgeMs` old (fields in SocketInfo's order, as JSON prints them). */
  record(s: number, stateAgeMs: number): LeakRecord {
    const b = this.bits[s]!;
    const keepalive = (b & KEEPALIVE) !== 0;
    const reapBy = this.reapBy[s]!;
    const timed = keepalive && !Number.isNaN(reapBy);
    return {
      type: 'leak',
      cookie: cookieText(this.cookieKey(s)),
      state: 'CLOSE_WAIT',
      family: b & V6 ? 6 : 4,
      local: this.local(s),
      remote: this.remote(s),
      netns: this.netns[s]!,
      owners: [...this.owners(s)],
      creator: this.creator[s]!,
      recvQ: this.recvQ[s]!,
      sendQ: this.sendQ[s]!,
      keepalive,
      keepaliveProbeInMs: timed ? this.probeIn[s]! : null,
      keepaliveReapByMs: timed ? reapBy : null,
      stateAgeMs,
      ageEstimated: (b & ESTIMATED) !== 0,
      uid: this.uid[s]!,
    };
  }
}
