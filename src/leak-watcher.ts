/**
 * The CLOSE_WAIT leak engine behind `sockleak watch`, `run` and the agent.
 *
 * The kernel does the bookkeeping (bpf/trace.bpf.c, leak mode): every socket in
 * CLOSE_WAIT sits in a BPF map with the time it got there and its creator, so
 * healthy connections cost nothing in user space. Every tick this class asks
 * the kernel for the sockets that crossed the threshold since the last tick,
 * resolves their owners with the task_file iterator, and reports them; from
 * then on the kernel sends their close() calls and their leaving CLOSE_WAIT.
 */
import { monotonicNowNs } from './clock';
import { decodeEvent } from './decode';
import { Fifo } from './fifo';
import { NotFoundError, UsageError } from './errors';
import type { BindEvent, CloseEvent, ConnectEvent, StateEvent, TraceCounters, TraceEvent } from './events';
import { EVENT, EVENT_FLAGS, EVENT_SIZE } from './generated/layout';
import { requireProcess } from './preflight';
import { SocketScanner } from './scan';
import type { Creator, Owner, SocketInfo } from './sockets';
import { Tracer } from './tracer';

/** A socket that stayed in CLOSE_WAIT longer than the threshold. */
export interface LeakRecord extends SocketInfo {
  type: 'leak';
}

/** Who closed a socket: fd is null when the socket went without a close() (exit, exec, dup2, close_range). */
export interface Closer {
  pid: number;
  tid: number;
  comm: string;
  fd: number | null;
}

/** A reported leak is gone. */
export interface ResolvedRecord {
  type: 'resolved';
  cookie: string;
  local: string;
  remote: string;
  /** The task whose close freed it; null when it went without one of the holders acting (reset, keepalive). */
  closedBy: Closer | null;
  /** close: a close() freed it; exit: the last holder exited or replaced the fd; peer: reset or timer; gone: found missing by a rescan. */
  how: 'close' | 'exit' | 'peer' | 'gone';
  /** How long it had been in CLOSE_WAIT. */
  heldMs: number;
}

/** A holder closed its fd of a reported leak, but others still hold the socket. */
export interface FdClosedRecord {
  type: 'fd-closed';
  cookie: string;
  remote: string;
  closedBy: Closer;
  stillHeldBy: Owner[];
}

export type WatchRecord = LeakRecord | ResolvedRecord | FdClosedRecord;

export interface WatchOptions {
  /** How long a socket may stay in CLOSE_WAIT before it is a leak, in ms. Default 30 s. */
  thresholdMs?: number;
  /** Only leaks held (or created) by this process. */
  pid?: number;
  /** How often the kernel is asked for new leaks, in ms. Default 250. */
  tickMs?: number;
  /** How often every reported leak's owners are rescanned, in ms. Default 10 s. */
  rescanMs?: number;
  /** Bound of the in-kernel CLOSE_WAIT and creator maps. Default 262144. */
  maxSockets?: number;
  btfPath?: string;
  /** Receives every connect() that failed with EADDRNOTAVAIL and bind() with EADDRINUSE (port-watcher.ts). */
  onPortEvent?: (ev: ConnectEvent | BindEvent) => void;
  /**
   * Only leaks of a process tree (`sockleak run`): held or created by a process
   * that was in the tree while watching. addTreeRoot() adds a root; the kernel
   * adds its descendants (forks, daemons, new sessions) and drops them on exit.
   * Only the tree's processes are scanned (owners outside it are not listed) and
   * sockets already in CLOSE_WAIT at start are not seeded: a tree starts new.
   */
  followTree?: boolean;
}

interface Leak {
  record: LeakRecord;
  /** CLOCK_MONOTONIC ns it entered CLOSE_WAIT (estimated for pre-existing ones). */
  enteredNs: number;
}

function validate(o: WatchOptions): void {
  for (const [name, v, min] of [
    ['threshold', o.thresholdMs, 0],
    ['tick', o.tickMs, 10],
    ['rescan', o.rescanMs, 100],
    ['maxSockets', o.maxSockets, 1024],
  ] as const) {
    if (v !== undefined && (!Number.isSafeInteger(v) || v < min)) throw new UsageError(`${name} must be an integer >= ${min}, got ${v}`);
  }
}

/** Live leak detection. Iterate it for records; close() to stop. */
export class LeakWatcher implements AsyncIterable<WatchRecord> {
  private readonly tracer: Tracer;
  private readonly scanner: SocketScanner;
  private readonly thresholdNs: number;
  private readonly leaks = new Map<string, Leak>();
  /** Reported leaks that left CLOSE_WAIT in their owner's context; the close event names the fd. */
  private readonly leaving = new Map<string, { ev: StateEvent; tick: number }>();
  /** Reported leaks whose owners changed under us: rescan and report at the next tick. */
  private readonly stale = new Map<string, Closer>();
  private readonly out = new Fifo<WatchRecord>();
  private wake: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private ticks = 0;
  private lastRescanNs = 0;
  private busy = false;
  private ended = false;
  private failure: unknown;
  private mapFullSeed = 0;
  /** followTree: every process seen in the tree; processes exit before their leaks are reported. */
  private readonly treeSeen = new Set<number>();
  private readonly pumping: Promise<void>;

  constructor(private readonly options: WatchOptions = {}) {
    validate(options);
    if (options.pid !== undefined) requireProcess(options.pid);
    this.thresholdNs = (options.thresholdMs ?? 30_000) * 1e6;
    this.scanner = new SocketScanner(options.btfPath !== undefined ? { btfPath: options.btfPath } : {});
    try {
      this.tracer = new Tracer({
        leakMode: true,
        ...(options.maxSockets !== undefined && { maxSockets: options.maxSockets }),
        ...(options.btfPath !== undefined && { btfPath: options.btfPath }),
        ...(options.followTree && { followTree: true }),
      });
    } catch (err) {
      this.scanner.close();
      throw err;
    }
    this.pumping = this.pump();
    this.timer = setInterval(() => void this.tick(), options.tickMs ?? 250);
    void this.tick(); // the first tick seeds sockets already in CLOSE_WAIT
  }

  /** Leaks currently open (reported and not resolved). */
  current(): LeakRecord[] {
    return [...this.leaks.values()].map((l) => ({ ...l.record, stateAgeMs: this.ageMs(l) }));
  }

  /** followTree: adds `pid` to the tree; add it before it forks, or its children escape. */
  addTreeRoot(pid: number): void {
    if (!this.options.followTree) throw new UsageError('addTreeRoot() needs the followTree option');
    this.tracer.treeAdd(pid);
    this.treeSeen.add(pid);
  }

  /** followTree: processes of the tree alive now. Each call also remembers them as members. */
  treePids(): number[] {
    const pids = this.options.followTree ? this.tracer.treePids() : [];
    for (const pid of pids) this.treeSeen.add(pid);
    return pids;
  }

  /** followTree: every process seen in the tree since the start (alive or not), as far as polling saw. */
  treeMembers(): ReadonlySet<number> {
    this.treePids();
    return this.treeSeen;
  }

  /** @internal Active closes so far, raw (sl_close_key, sl_close_count) pairs: who left TIME_WAIT behind. */
  activeCloses(): Buffer {
    return this.tracer.activeCloses();
  }

  /** Events emitted/lost by the kernel, plus seeds refused by a full map (counted as mapFull). */
  counters(): TraceCounters {
    const c = this.tracer.counters();
    return { ...c, mapFull: c.mapFull + BigInt(this.mapFullSeed) };
  }

  private ageMs(leak: Leak): number {
    return Math.max(0, Math.round((monotonicNowNs() - leak.enteredNs) / 1e6));
  }

  private emit(record: WatchRecord): void {
    this.out.push(record);
    this.wake?.();
  }

  /** Applies what the kernel sends about reported leaks. */
  private async pump(): Promise<void> {
    for await (const batch of this.tracer.batches()) {
      for (const ev of batch) this.apply(ev);
    }
  }

  private apply(ev: TraceEvent): void {
    if ((ev.type === 'connect' || ev.type === 'bind') && (ev.ret === -99 || ev.ret === -98)) {
      this.options.onPortEvent?.(ev);
      return;
    }
    const leak = this.leaks.get(ev.cookie);
    if (!leak) return;
    if (ev.type === 'state') {
      if (ev.context === 'task') this.leaving.set(ev.cookie, { ev, tick: this.ticks });
      else this.resolve(leak, null, 'peer');
    } else if (ev.type === 'close' && ev.ret === 0) {
      this.closed(leak, ev);
    }
  }

  private closed(leak: Leak, ev: CloseEvent): void {
    const closer: Closer = { pid: ev.pid, tid: ev.tid, comm: ev.comm, fd: ev.fd };
    const leaving = this.leaving.get(ev.cookie);
    if (leaving && leaving.ev.tid === ev.tid) {
      this.leaving.delete(ev.cookie);
      this.resolve(leak, closer, 'close');
      return;
    }
    // The socket survived this close(): someone else holds it.
    leak.record.owners = leak.record.owners.filter((o) => !(o.pid === ev.pid && o.fd === ev.fd));
    this.stale.set(ev.cookie, closer);
  }

  private resolve(leak: Leak, closedBy: Closer | null, how: ResolvedRecord['how']): void {
    const { cookie, local, remote } = leak.record;
    this.leaks.delete(cookie);
    this.leaving.delete(cookie);
    this.stale.delete(cookie);
    this.emit({ type: 'resolved', cookie, local, remote, closedBy, how, heldMs: this.ageMs(leak) });
  }

  private matchesPid(info: SocketInfo, creator: Creator | null): boolean {
    const pid = this.options.pid;
    return pid === undefined || info.owners.some((o) => o.pid === pid) || creator?.pid === pid;
  }

  private matchesTree(info: SocketInfo, creator: Creator | null): boolean {
    if (!this.options.followTree) return true;
    return info.owners.some((o) => this.treeSeen.has(o.pid)) || (creator !== null && this.treeSeen.has(creator.pid));
  }

  /** CLOSE_WAIT sockets with owners; with followTree only the tree's, so a busy host costs nothing. */
  private async scanCloseWait(): Promise<Map<string, SocketInfo>> {
    if (!this.options.followTree) return this.scanner.scan({ states: ['CLOSE_WAIT'] });
    const sockets = new Map<string, SocketInfo>();
    for (const pid of this.treePids()) {
      let found: Map<string, SocketInfo>;
      try {
        found = await this.scanner.scan({ pid, states: ['CLOSE_WAIT'] });
      } catch (err) {
        if (err instanceof NotFoundError) continue; // exited meanwhile
        throw err;
      }
      for (const [cookie, info] of found) {
        const known = sockets.get(cookie);
        if (known) known.owners.push(...info.owners);
        else sockets.set(cookie, info);
      }
    }
    return sockets;
  }

  private async tick(): Promise<void> {
    if (this.busy || this.ended) return;
    this.busy = true;
    try {
      await this.step();
    } catch (err) {
      this.failure = err;
      void this.close();
    } finally {
      this.busy = false;
    }
  }

  /** Reports now every matching socket in CLOSE_WAIT, whatever its age (`sockleak run`, when the command exits). */
  async flush(): Promise<void> {
    while (this.busy) await new Promise((resolve) => setTimeout(resolve, 5));
    if (this.ended) return;
    this.busy = true;
    try {
      await this.step(0);
    } finally {
      this.busy = false;
    }
  }

  private async step(thresholdNs = this.thresholdNs): Promise<void> {
    this.ticks++;
    this.treePids();
    const nowNs = monotonicNowNs();
    if (this.ticks === 1 && !this.options.followTree) {
      // Sockets already in CLOSE_WAIT: into the kernel map, with estimated entry times (a tree starts empty).
      await this.scanner.scan({ states: ['CLOSE_WAIT'], onRaw: (raw) => (this.mapFullSeed += this.tracer.seed(raw)) });
    }
    // A leak that left CLOSE_WAIT in its owner's context with no close() event: exit, exec, dup2, close_range.
    for (const [cookie, { ev, tick }] of this.leaving) {
      const leak = this.leaks.get(cookie);
      if (leak && tick < this.ticks - 1) this.resolve(leak, { pid: ev.pid, tid: ev.tid, comm: ev.comm, fd: null }, 'exit');
    }
    const raw = this.tracer.collectLeaks(nowNs - thresholdNs);
    // Owners of open leaks go stale; with none open there is nothing to rescan (a scan visits every socket).
    const rescan = this.leaks.size > 0 && nowNs - this.lastRescanNs >= (this.options.rescanMs ?? 10_000) * 1e6;
    if (raw.length === 0 && this.stale.size === 0 && !rescan) return;

    const sockets = await this.scanCloseWait();
    const vanished: string[] = [];
    for (let at = 0; at + EVENT_SIZE <= raw.length; at += EVENT_SIZE) {
      const entry = decodeEvent(raw, at);
      if (!entry) continue;
      const flags = raw.readUInt8(at + EVENT.flags.offset);
      const info = sockets.get(entry.cookie);
      if (!info) {
        vanished.push(entry.cookie); // left CLOSE_WAIT between the map and the scan: the kernel missed nothing
        continue;
      }
      const creator = flags & EVENT_FLAGS.CREATOR ? { pid: entry.pid, tid: entry.tid, comm: entry.comm } : null;
      if (!this.matchesPid(info, creator) || !this.matchesTree(info, creator)) continue;
      const estimated = (flags & EVENT_FLAGS.AGE_ESTIMATED) !== 0;
      const enteredNs = estimated && entry.tsNs === 0 ? nowNs : entry.tsNs;
      const leak: Leak = { enteredNs, record: { type: 'leak', ...info, creator, ageEstimated: estimated, stateAgeMs: 0 } };
      leak.record.stateAgeMs = this.ageMs(leak);
      this.leaks.set(entry.cookie, leak);
      this.emit(leak.record);
    }
    for (const [cookie, closedBy] of this.stale) {
      const leak = this.leaks.get(cookie);
      const info = sockets.get(cookie);
      if (!leak) continue;
      if (!info) this.resolve(leak, closedBy, 'exit');
      else {
        leak.record.owners = info.owners;
        this.emit({ type: 'fd-closed', cookie, remote: leak.record.remote, closedBy, stillHeldBy: info.owners });
      }
    }
    this.stale.clear();
    if (rescan) {
      this.lastRescanNs = nowNs;
      for (const leak of [...this.leaks.values()]) {
        const info = sockets.get(leak.record.cookie);
        if (info) leak.record.owners = info.owners;
        else if (!this.leaving.has(leak.record.cookie)) {
          vanished.push(leak.record.cookie);
          this.resolve(leak, null, 'gone');
        }
      }
    }
    this.tracer.forget(vanished);
  }

  /** Stops: detaches, unloads; the iterator ends after the records already produced. */
  async close(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    clearInterval(this.timer);
    await this.tracer.close();
    await this.pumping.catch(() => undefined);
    this.scanner.close();
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<WatchRecord> {
    try {
      for (;;) {
        const next = this.out.shift();
        if (next) {
          yield next;
          continue;
        }
        if (this.failure) throw this.failure;
        if (this.ended) return;
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = undefined;
      }
    } finally {
      await this.close();
    }
  }
}

/** Starts watching for CLOSE_WAIT leaks. Throws a SockleakError subclass on bad options or environment. */
export function watch(options: WatchOptions = {}): LeakWatcher {
  return new LeakWatcher(options);
}
