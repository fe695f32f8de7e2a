/**
 * The live tracer as a library: `for await (const ev of openTracer({ pid }))`.
 * Batches from the addon's poll thread are queued (bounded) and decoded as the
 * consumer pulls them, so a slow consumer costs memory only up to the bound
 * and every record it could not take is counted as lost.
 */
import { loadAddon, type NativeProgramStats, type NativeTracer } from '../kernel/addon';
import { decodeBatch, eventCount } from './decode';
import { KernelUnsupportedError, UsageError } from '../errors';
import type { TraceCounters, TraceEvent } from '../events';
import { noteFallback } from '../kernel/fallbacks';
import { mergeRefusals, TRACER_CORE, traceFallbacks, TREE_PROGRAMS } from '../kernel/kernel-paths';
import { knownRefusals } from '../kernel/kernel-probe';
import { explainNativeError, requireBpfPrivileges, requireBtf, requireProcess } from '../kernel/preflight';
import { SocketScanner } from '../scan/scan';

export interface TracerOptions {
  /** Only this process's syscalls and sockets (state changes of sockets it made, accepted or listened on). */
  pid?: number;
  /** Ring buffer size in bytes: a power of two, at least 4096. Default 8 MiB. */
  ringBytes?: number;
  /** How often the reader drains the ring buffer, in ms. Default 100. */
  pollMs?: number;
  /** Kernel BTF to relocate against; default the running kernel's (or $SOCKLEAK_BTF). */
  btfPath?: string;
  /** Batches (up to 1 MiB each) queued for a slow consumer before they are dropped and counted. Default 64. */
  maxQueuedBatches?: number;
  /**
   * @internal Tests: bytes waiting in the ring buffer before the kernel wakes
   * the reader early (default a quarter of the ring). At least `ringBytes`:
   * only the poll timer drains it.
   */
  wakeupBytes?: number;
  /**
   * @internal Leak mode (used by watch()): CLOSE_WAIT bookkeeping stays in BPF
   * maps, only reported leaks reach user space.
   */
  leakMode?: boolean;
  /** @internal Leak mode: bound of the in-kernel CLOSE_WAIT and creator maps. */
  maxSockets?: number;
  /** @internal Leak mode: follow a process tree (treeAdd() its root). */
  followTree?: boolean;
  /** @internal Leak mode: record creators (default true; costs a slot write and clear per connection). */
  trackCreators?: boolean;
  /** @internal Leak mode with trackCreators: capture the user-space stack of each connect() (default false). */
  creatorStacks?: boolean;
  /**
   * @internal Leak mode: slots of the kernel's direct-mapped per-socket array, a
   * power of two (default 65536). A socket that outlives this many newer ones
   * moves to the hashes; tests set a few to make that happen.
   */
  socketSlots?: number;
}

/** How the tracer hooks syscalls: per-syscall tracepoints (leak mode, needs tracefs) or tp_btf raw syscalls. */
export interface TracerHooks {
  syscalls: 'tracepoint' | 'tp_btf';
  /** Leak mode: how leaks leave the kernel's maps: their map-element iterators, or user space's walk where the kernel refuses those. */
  leakWalk: 'iterator' | 'user';
  /** sockleak mounted tracefs on /sys/kernel/tracing to use the per-syscall tracepoints. */
  mountedTracefs: boolean;
  /** Leak mode: connect() stacks are captured (asked for, and the kernel took the program). */
  creatorStacks: boolean;
}

/**
 * The tracer's defaults, written here only: the addon takes every value
 * explicitly and has none of its own (native/tracer-wrap.cc).
 */
export const TRACER_DEFAULTS = {
  ringBytes: 8 << 20,
  pollMs: 100,
  maxQueuedBatches: 64,
  /** Bound of the in-kernel CLOSE_WAIT and creator hashes (leak mode). */
  maxSockets: 262_144,
  trackCreators: true,
} as const;

function validate(options: TracerOptions): void {
  const { pid, ringBytes, pollMs, maxQueuedBatches, wakeupBytes, socketSlots } = options;
  if (socketSlots !== undefined && (!Number.isInteger(socketSlots) || socketSlots < 1 || socketSlots > 1 << 24 || (socketSlots & (socketSlots - 1)) !== 0)) {
    throw new UsageError(`socketSlots must be a power of two between 1 and 2^24, got ${socketSlots}`);
  }
  if (pid !== undefined && (!Number.isInteger(pid) || pid <= 0 || pid > 0x3fffffff)) {
    throw new UsageError(`pid must be a positive integer, got ${pid}`);
  }
  if (ringBytes !== undefined && (ringBytes < 4096 || ringBytes > 1 << 30 || (ringBytes & (ringBytes - 1)) !== 0)) {
    throw new UsageError(`ring buffer size must be a power of two between 4096 and 1 GiB, got ${ringBytes}`);
  }
  if (pollMs !== undefined && (!Number.isInteger(pollMs) || pollMs < 1 || pollMs > 10_000)) {
    throw new UsageError(`poll interval must be 1..10000 ms, got ${pollMs}`);
  }
  if (maxQueuedBatches !== undefined && (!Number.isInteger(maxQueuedBatches) || maxQueuedBatches < 1)) {
    throw new UsageError(`maxQueuedBatches must be a positive integer, got ${maxQueuedBatches}`);
  }
  if (wakeupBytes !== undefined && (!Number.isSafeInteger(wakeupBytes) || wakeupBytes < 0)) {
    throw new UsageError(`wakeupBytes must be a non-negative integer, got ${wakeupBytes}`);
  }
}

/** A running tracer. Iterate it once; close() it (or break out of the loop) to detach. */
export class Tracer implements AsyncIterable<TraceEvent> {
  private readonly native: NativeTracer;
  private readonly queue: Buffer[] = [];
  private readonly maxQueued: number;
  private wake: (() => void) | undefined;
  private ended = false;
  private closing: Promise<void> | undefined;
  private droppedInProcess = 0n;
  private seeding: Promise<void> = Promise.resolve();
  private seedRefused = 0;
  private seedError: unknown;

  /** Loads and attaches the BPF programs; events flow from the moment this returns. */
  constructor(options: TracerOptions = {}) {
    validate(options);
    requireBpfPrivileges();
    const btfPath = requireBtf(options.btfPath);
    if (options.pid !== undefined) requireProcess(options.pid);
    this.maxQueued = options.maxQueuedBatches ?? TRACER_DEFAULTS.maxQueuedBatches;
    const ringBytes = options.ringBytes ?? TRACER_DEFAULTS.ringBytes;
    const addon = loadAddon();
    const known = knownRefusals(btfPath);
    const mode = { leakMode: options.leakMode ?? false, followTree: options.followTree ?? false, creatorStacks: options.creatorStacks ?? false };
    const core = ['bpf', ...TRACER_CORE, ...(mode.followTree ? TREE_PROGRAMS : [])].find((p) => known.has(p));
    if (core) throw new KernelUnsupportedError(`the tracer's BPF program ${core} is refused (${known.get(core)})`);
    try {
      this.native = new addon.Tracer(
        {
          ...(options.pid !== undefined && { pid: options.pid }),
          ringBytes,
          wakeupBytes: options.wakeupBytes ?? ringBytes / 4,
          pollMs: options.pollMs ?? TRACER_DEFAULTS.pollMs,
          leakMode: mode.leakMode,
          followTree: mode.followTree,
          trackCreators: options.trackCreators ?? TRACER_DEFAULTS.trackCreators,
          creatorStacks: mode.creatorStacks,
          // Tests only: SOCKLEAK_FAULT=verifier loads a program the verifier must reject.
          faultInject: process.env.SOCKLEAK_FAULT === 'verifier' ? 1 : 0,
          maxSockets: options.maxSockets ?? TRACER_DEFAULTS.maxSockets,
          ...(options.socketSlots !== undefined && { socketSlots: options.socketSlots }),
          ...(btfPath !== undefined && { btfPath }),
          refused: [...known.keys()],
        },
        (batch) => this.onBatch(batch),
      );
    } catch (err) {
      throw explainNativeError(err);
    }
    const { refused, reasons } = mergeRefusals(known, this.native.hooks().refusals);
    for (const fallback of traceFallbacks(refused, mode, reasons)) noteFallback(fallback);
    if (options.pid !== undefined) {
      this.seeding = this.followExisting(options.pid, btfPath).catch((err: unknown) => {
        this.seedError = err;
      });
    }
  }

  /**
   * With a pid: the sockets it already has are followed from a few ms after
   * start (a scan), including connections accepted on its listening sockets.
   */
  private async followExisting(pid: number, btfPath: string | undefined): Promise<void> {
    const scanner = new SocketScanner(btfPath !== undefined ? { btfPath } : {});
    try {
      await scanner.scan({ pid, onRaw: (raw) => (this.seedRefused += this.native.follow(raw)) });
    } finally {
      scanner.close();
    }
  }

  private onBatch(batch: Buffer): void {
    if (this.queue.length >= this.maxQueued) {
      this.droppedInProcess += BigInt(eventCount(batch));
      return;
    }
    this.queue.push(batch);
    this.wake?.();
  }

  /** Resolves once a `pid` tracer follows the sockets the process already had (immediately without `pid`). */
  ready(): Promise<void> {
    return this.seeding;
  }

  /** Totals so far; after close(), the final ones. `lost` includes batches a slow consumer missed. */
  counters(): TraceCounters {
    const c = this.native.counters();
    return {
      emitted: c.emitted,
      lost: c.lost + this.droppedInProcess,
      mapFull: c.mapFull + BigInt(this.seedRefused),
      missed: c.missed,
    };
  }

  /** Per-program kernel run time (needs kernel.bpf_stats_enabled=1), for benchmarks. */
  programStats(): NativeProgramStats[] {
    return this.native.programStats();
  }

  /** How syscalls are hooked, and whether tracefs had to be mounted for it. */
  hooks(): TracerHooks {
    return this.native.hooks();
  }

  /** @internal Leak mode with creatorStacks: the raw stack `id` of the kernel's user_stacks map, or null. */
  readStack(id: number): { frames: BigUint64Array; words: BigUint64Array } | null {
    return this.native.readStack(id);
  }

  /** @internal Leak mode: close_wait entries newly past `cutoffNs`, raw struct sl_event records. */
  collectLeaks(cutoffNs: number): Buffer {
    try {
      return this.native.collectLeaks(BigInt(Math.max(0, Math.floor(cutoffNs))));
    } catch (err) {
      throw explainNativeError(err);
    }
  }

  /** @internal Leak mode: enters CLOSE_WAIT sockets from a raw scan; returns how many a full map refused. */
  seed(rawScan: Buffer): number {
    return this.native.seed(rawScan);
  }

  /** @internal Leak mode: forgets sockets that no longer exist. */
  forget(cookies: string[]): void {
    if (cookies.length) this.native.forget(cookies.map((c) => BigInt(c)));
  }

  /** @internal Leak mode: the active_closes map, raw (sl_close_key, sl_close_count) pairs. */
  activeCloses(): Buffer {
    return this.native.activeCloses();
  }

  /** @internal followTree: adds the root of the tree. */
  treeAdd(pid: number): void {
    try {
      this.native.treeAdd(pid);
    } catch (err) {
      throw explainNativeError(err);
    }
  }

  /** @internal followTree: processes of the tree alive now. */
  treePids(): number[] {
    return this.native.treePids();
  }

  /** Detaches after delivering every record already in the ring buffer. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.native.close().then(() => {
      this.ended = true;
      this.wake?.();
    });
    return this.closing;
  }

  /** Decoded events, one batch (array) at a time: the cheap way to consume a busy tracer. */
  async *batches(): AsyncGenerator<TraceEvent[]> {
    try {
      await this.seeding;
      if (this.seedError) throw this.seedError; // a failed scan of the target's sockets fails the iteration
      for (;;) {
        const batch = this.queue.shift();
        if (batch) {
          yield decodeBatch(batch);
          continue;
        }
        if (this.ended) return;
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = undefined;
      }
    } finally {
      await this.close();
    }
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<TraceEvent> {
    for await (const batch of this.batches()) yield* batch;
  }
}

/** Starts tracing. Throws a SockleakError subclass (see errors.ts) on bad options or environment. */
export function openTracer(options: TracerOptions = {}): Tracer {
  return new Tracer(options);
}
