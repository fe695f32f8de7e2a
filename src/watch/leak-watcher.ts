/**
 * The CLOSE_WAIT leak engine behind `sockleak watch`, `run` and the agent.
 *
 * The kernel does the bookkeeping (bpf/trace.bpf.c, leak mode): every socket in
 * CLOSE_WAIT sits in a BPF map with the time it got there and its creator, so
 * healthy connections cost nothing in user space. Every tick this class asks
 * the kernel for the sockets that crossed the threshold since the last tick,
 * resolves their owners with the task_file iterator, and reports them; from
 * then on the kernel sends their close() calls and their leaving CLOSE_WAIT.
 *
 * Per leak it keeps one slot of a LeakTable (leak-table.ts: typed-array
 * columns, ~130 bytes a leak) and makes the full LeakRecord only when one is
 * asked for: when the record is taken from the iterator, by current(), by
 * leak(). Each step's iterator pass and what it finds are reconciled with
 * the table in leak-reconcile.ts, which writes new leaks straight into their slots.
 */
import { monotonicNowNs } from '../clock';
import { CloseWaitScanner } from '../scan/close-wait-scan';
import { UsageError } from '../errors';
import type { BindEvent, CloseEvent, ConnectEvent, StateEvent, TraceCounters, TraceEvent } from '../events';
import { cookieKey, cookieText, type CookieKey, type CookieMap } from '../cookie-map';
import { requireProcess } from '../kernel/preflight';
import { ProcessTree } from './process-tree';
import { keyOf, OpenLeaks } from './open-leaks';
import { LeakReconciler } from './leak-reconcile';
import { matchesWhere, type CgroupFilter } from '../cgroup-path';
import type { Creator, Owner } from '../sockets';
import { Symbolizer, type ResolvedStack } from '../stacks/symbolizer';
import { Tracer, type TracerHooks } from '../trace/tracer';
import type { Closer, ResolvedRecord } from '../watch-records';

export interface WatchOptions {
  /** How long a socket may stay in CLOSE_WAIT before it is a leak, in ms. Default 30 s. */
  thresholdMs?: number;
  /** Only leaks held (or created) by this process. */
  pid?: number;
  /** Only leaks held or created in this cgroup (or under it) and container (`--cgroup`, `--container`). */
  where?: CgroupFilter;
  /** How often the kernel is asked for new leaks, in ms. Default 250. */
  tickMs?: number;
  /** How often every reported leak's owners are rescanned, in ms. Default 10 s. */
  rescanMs?: number;
  /** Bound of the in-kernel CLOSE_WAIT and creator hashes, which hold the sockets that have no slot of the kernel's per-socket array (65536 slots besides). Default 262144. */
  maxSockets?: number;
  /** @internal Slots of the kernel's per-socket array (a power of two; see TracerOptions.socketSlots). */
  socketSlots?: number;
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
  /**
   * Capture where in the code each leak was made: the user-space stack of the
   * connect() that created it, named while its process lives (Creator.stack).
   * Costs a stack walk per connect() (docs/benchmarks.md); default false.
   */
  stacks?: boolean;
}

export function validate(o: WatchOptions): void {
  for (const [name, v, min] of [
    ['threshold', o.thresholdMs, 0],
    ['tick', o.tickMs, 10],
    ['rescan', o.rescanMs, 100],
    ['maxSockets', o.maxSockets, 1024],
  ] as const) {
    if (v !== undefined && (!Number.isSafeInteger(v) || v < min)) throw new UsageError(`${name} must be an integer >= ${min}, got ${v}`);
  }
}

/**
 * The ring in leak mode: it carries only reported leaks' closes and departures
 * and port failures, not every transition, so a quarter of trace's 8 MiB. Its
 * pages count twice in RSS (the kernel maps a ring's data twice). A burst
 * larger than it (a process exiting with 200k leaks) is drained as it comes;
 * what is lost is counted, and the owner rescan resolves those leaks as gone.
 */
const LEAK_RING_BYTES = 2 << 20;

/** Live leak detection. Iterate it for records; close() to stop. */
export class LeakWatcher extends OpenLeaks {
  private readonly tracer: Tracer;
  private readonly scanner: CloseWaitScanner;
  private readonly thresholdNs: number;
  /** Reported leaks that left CLOSE_WAIT in their owner's context; the close event names the fd. */
  private readonly leaving = new Map<CookieKey, { ev: StateEvent; tick: number }>();
  /** Reported leaks whose owners changed under us: rescan and report at the next tick. */
  private readonly stale = new Map<CookieKey, Closer>();
  private readonly reconciler: LeakReconciler;
  private timer: NodeJS.Timeout | undefined;
  private ticks = 0;
  private lastRescanNs = 0;
  /** When the last step started, and how long its collectLeaks() took: it walks the kernel's whole CLOSE_WAIT map. */
  private lastStepNs = 0;
  private collectCostNs = 0;
  private busy = false;
  private mapFullSeed = 0;
  private readonly pumping: Promise<void>;
  /**
   * Settles once the first step is over (seeding, and at a restart the burst of
   * every leak already there), or the watcher closed first: heavy work that can
   * wait should, so that the two do not add up.
   */
  readonly firstStep: Promise<void>;
  private firstStepOver: () => void = () => undefined;

  constructor(private readonly options: WatchOptions = {}) {
    super();
    validate(options);
    if (options.pid !== undefined) requireProcess(options.pid);
    this.thresholdNs = (options.thresholdMs ?? 30_000) * 1e6;
    this.scanner = new CloseWaitScanner(options.btfPath !== undefined ? { btfPath: options.btfPath } : {});
    try {
      this.tracer = new Tracer({
        leakMode: true,
        ringBytes: LEAK_RING_BYTES,
        ...(options.maxSockets !== undefined && { maxSockets: options.maxSockets }),
        ...(options.socketSlots !== undefined && { socketSlots: options.socketSlots }),
        ...(options.btfPath !== undefined && { btfPath: options.btfPath }),
        ...(options.followTree && { followTree: true }),
        ...(options.stacks && { creatorStacks: true }),
      });
    } catch (err) {
      this.scanner.close();
      throw err;
    }
    this.tree = options.followTree ? new ProcessTree(this.tracer) : undefined;
    const symbolizer = options.stacks ? new Symbolizer() : undefined;
    const stackOf = (pid: number, id: number): ResolvedStack | null => {
      const raw = this.tracer.readStack(id);
      return raw && symbolizer ? symbolizer.resolve(pid, [...raw.frames], [...raw.words]) : null;
    };
    this.reconciler = new LeakReconciler(this.leaks, this.scanner, symbolizer && stackOf);
    this.firstStep = new Promise((resolve) => (this.firstStepOver = resolve));
    this.pumping = this.pump();
    this.timer = setInterval(() => void this.tick(), options.tickMs ?? 250);
    void this.tick(); // the first tick seeds sockets already in CLOSE_WAIT
  }

  /**
   * Stops following an open leak without a record (a bounded consumer dropped it):
   * its state goes, and the kernel forgets it, which makes room for new ones.
   */
  evict(cookie: CookieKey): void {
    const key = keyOf(cookie);
    const s = this.slotOf(key);
    if (s < 0) return;
    this.leaks.remove(s);
    this.leaving.delete(key);
    this.stale.delete(key);
    this.tracer.forget([cookieText(key)]);
  }

  /** How the tracer hooks syscalls, and whether it mounted tracefs to do so (the CLI says so). */
  hooks(): TracerHooks {
    return this.tracer.hooks();
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
    const leak = this.slotOf(cookieKey(ev.cookie));
    if (leak < 0) return;
    const cookie = this.leaks.cookieKey(leak);
    if (ev.type === 'state') {
      const closer = this.stale.get(cookie);
      // Before 6.6, close() dropped the last reference on its way back to user
      // space (task_work; commit 021a160abf62 made it synchronous): its close
      // record comes first, then the socket leaves CLOSE_WAIT in the same thread.
      if (closer && closer.tid === ev.tid) this.resolve(leak, closer, 'close');
      else if (ev.context === 'task') this.leaving.set(cookie, { ev, tick: this.ticks });
      else this.resolve(leak, null, 'peer');
    } else if (ev.type === 'close' && ev.ret === 0) {
      this.closed(leak, ev);
    }
  }

  private closed(leak: number, ev: CloseEvent): void {
    const closer: Closer = { pid: ev.pid, tid: ev.tid, comm: ev.comm, fd: ev.fd };
    const cookie = this.leaks.cookieKey(leak);
    const leaving = this.leaving.get(cookie);
    if (leaving && leaving.ev.tid === ev.tid) {
      this.leaving.delete(cookie);
      this.resolve(leak, closer, 'close');
      return;
    }
    // The socket survived this close() (someone else holds it), or, before 6.6,
    // is about to leave CLOSE_WAIT (see apply()): the next tick's scan says
    // which, and who holds it now.
    this.stale.set(cookie, closer);
  }

  private resolve(leak: number, closedBy: Closer | null, how: ResolvedRecord['how']): void {
    const t = this.leaks;
    const cookie = t.cookieKey(leak);
    const record: ResolvedRecord = { type: 'resolved', cookie: cookieText(cookie), local: t.local(leak), remote: t.remote(leak), closedBy, how, heldMs: this.ageMs(leak) };
    t.remove(leak);
    this.leaving.delete(cookie);
    this.stale.delete(cookie);
    this.emit(record);
  }

  private matchesPid(owners: readonly Owner[], creator: Creator | null): boolean {
    const pid = this.options.pid;
    return (pid === undefined || owners.some((o) => o.pid === pid) || creator?.pid === pid) && matchesWhere(this.options.where, owners, creator);
  }

  private matchesTree(owners: readonly Owner[], creator: Creator | null): boolean {
    return this.tree?.holdsOrCreated(owners, creator) ?? true;
  }

  private async tick(): Promise<void> {
    if (this.busy || this.ended) return;
    // Collecting costs time per socket in CLOSE_WAIT: ask at most once per 10 of its costs, so asking takes <= ~10% of a core.
    if (monotonicNowNs() - this.lastStepNs < 10 * this.collectCostNs) return;
    this.busy = true;
    try {
      await this.step();
    } catch (err) {
      this.failure = err;
      void this.close();
    } finally {
      this.busy = false;
      this.firstStepOver();
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

  /**
   * One step: the kernel's leak map is asked for the sockets that crossed the
   * threshold, one iterator pass reconciles them and the open leaks with what
   * holds them (leak-reconcile.ts), and the records go out; the kernel then
   * forgets the sockets that left CLOSE_WAIT unseen.
   */
  private async step(thresholdNs = this.thresholdNs): Promise<void> {
    this.ticks++;
    this.treePids();
    const nowNs = monotonicNowNs();
    if (this.ticks === 1 && !this.options.followTree) {
      // Sockets already in CLOSE_WAIT: into the kernel map, with estimated entry times (a tree starts empty).
      await this.scanner.each((raw) => (this.mapFullSeed += this.tracer.seed(raw)));
    }
    this.resolveExited();
    const raw = this.collectLeaks(nowNs - thresholdNs);
    // Owners of open leaks go stale; with none open there is nothing to rescan (a scan visits every socket).
    const rescan = this.leaks.size > 0 && nowNs - this.lastRescanNs >= (this.options.rescanMs ?? 10_000) * 1e6;
    if (raw.length === 0 && this.stale.size === 0 && !rescan) return;

    const fresh = this.reconciler.newLeaks(raw);
    this.leaks.reserve(fresh.size); // a restart's burst: one growth to size, not several that copy
    const staleOwners = await this.reconciler.pass(raw, fresh, this.stale, rescan, nowNs, this.tree?.alive());
    const vanished = this.reportNew(raw, fresh);
    this.settleStale(staleOwners);
    if (rescan) this.lastRescanNs = nowNs;
    for (const leak of this.reconciler.settle(rescan, (cookie) => this.leaving.has(cookie) || staleOwners.has(cookie))) {
      vanished.push(this.leaks.cookieKey(leak));
      this.resolve(leak, null, 'gone');
    }
    this.tracer.forget(vanished.map(cookieText));
  }

  /** A leak that left CLOSE_WAIT in its owner's context with no close() event since the last step: exit, exec, dup2, close_range. */
  private resolveExited(): void {
    for (const [cookie, { ev, tick }] of this.leaving) {
      const leak = this.slotOf(cookie);
      if (leak >= 0 && tick < this.ticks - 1) this.resolve(leak, { pid: ev.pid, tid: ev.tid, comm: ev.comm, fd: null }, 'exit');
    }
  }

  /** The kernel's leaks past `sinceNs` (sl_event records), timing the walk: tick() spaces steps by its cost. */
  private collectLeaks(sinceNs: number): Buffer {
    const askedNs = monotonicNowNs();
    this.lastStepNs = askedNs;
    const raw = this.tracer.collectLeaks(sinceNs);
    this.collectCostNs = monotonicNowNs() - askedNs;
    return raw;
  }

  /**
   * Reports the new leaks the pass found (tentative slots) that match the
   * filters, in the kernel's order; returns those it did not find: they left
   * CLOSE_WAIT between the map and the scan, and the kernel missed nothing.
   */
  private reportNew(raw: Buffer, fresh: CookieMap): CookieKey[] {
    const vanished: CookieKey[] = [];
    // Records go out in the kernel's order (the table lists a burst in the order the scan found it).
    this.reconciler.eachNew(raw, fresh, (cookie) => {
      const leak = this.leaks.slotOf(cookie); // tentative: found by the pass
      if (leak < 0) {
        vanished.push(cookie);
        return;
      }
      const owners = this.leaks.owners(leak);
      const creator = this.leaks.creatorOf(leak);
      if (!this.matchesPid(owners, creator) || !this.matchesTree(owners, creator)) this.leaks.remove(leak);
      else {
        this.leaks.report(leak);
        this.emit(leak);
      }
    });
    return vanished;
  }

  /** Stale leaks (a close() they survived): resolved when no one holds them now, else their new holders reported. */
  private settleStale(staleOwners: ReadonlyMap<CookieKey, readonly Owner[]>): void {
    for (const [cookie, closedBy] of this.stale) {
      const leak = this.slotOf(cookie);
      if (leak < 0) continue;
      const owners = staleOwners.get(cookie);
      if (!owners) this.resolve(leak, closedBy, 'exit');
      else {
        this.leaks.setOwners(leak, owners);
        this.emit({ type: 'fd-closed', cookie: cookieText(cookie), remote: this.leaks.remote(leak), closedBy, stillHeldBy: [...owners] });
      }
    }
    this.stale.clear();
  }

  /** Stops: detaches, unloads; the iterator ends after the records already produced. */
  async close(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    this.firstStepOver();
    clearInterval(this.timer);
    await this.tracer.close();
    await this.pumping.catch(() => undefined);
    this.scanner.close();
    this.wake?.();
  }
}
