/**
 * `sockleak agent` as a library: the leak engine running for good, its state
 * kept bounded, exposed as Prometheus metrics, a protobuf record stream and an
 * optional recording.
 *
 * Data flow: watchWithPorts() records (leaks, connect failures, port pressure, fd forecasts)
 * → LeakIndex (state) → Record messages (mapping.ts) → every /stream
 * subscriber (StreamHub) and the recording (Recorder). A timer every
 * `intervalMs` counts sockets per state (StateCounter) and sends a Counters
 * record. Ports per destination are counted from the scans of the socket table
 * the engine's port watcher makes anyway (ports(), at most once a minute) into
 * a Ports record: one scan serves both.
 *
 * Records: each run's part of a recording (--record appends runs to the file)
 * starts with a Session record and a Snapshot of the agent's state (empty at
 * start: the engine's first tick re-finds the leaks already there, by seeding
 * its map from an iterator scan, and reports them as Leak records at once),
 * then a Snapshot once the engine has settled (first interval) and every
 * `snapshotEveryMs`. A subscriber starts with a Snapshot of the agent's state. Snapshot and Gap records have seq 0 (made for one
 * output); live records are numbered 1, 2, ... in the same order everywhere.
 */
import os from 'node:os';
import { capabilityGaps, type CapabilityGap } from '../kernel/preflight';
import { watchWithPorts, type PortAwareWatcher } from '../watch/port-watch';
import type { TraceCounters } from '../events';
import { TRACER_DEFAULTS, type TracerHooks } from '../trace/tracer';
import type { PortSocket } from '../ports/port-usage';
import { ports } from '../ports/ports';
import type { SocketInfo } from '../sockets';
import { startServer, type AgentServer } from './http-server';
import { LeakIndex } from './leak-index';
import { toBody, toCounters, toPorts, toSnapshot, type AgentCounters } from '../recording/mapping';
import type { RecordBody } from '../recording/messages';
import { AgentMetrics } from './metrics';
import { Recorder } from '../recording/recorder';
import type { AgentRecord, PortsSnapshot } from '../recording/records';
import { encodeRecord } from '../recording/schema';
import { StateCounter, type StateCount } from './state-counts';
import { StreamHub } from './stream-hub';
import { VERSION } from '../version';
import { exposure, loadWebConfig, type WebConfig } from './web-config';
import { validate, type AgentOptions, type AgentStatus } from './options';

export type { AgentOptions, AgentStatus } from './options';

/** How often the engine rescans every reported leak's owners. */
const RESCAN_MS = 30_000;

/** How often the engine's port watcher scans the socket table when no destination runs short, and the agent counts ports from it. */
const PORT_SCAN_MS = 60_000;

/** The tracer's totals before it starts. */
const NO_COUNTERS: TraceCounters = { emitted: 0n, lost: 0n, mapFull: 0n, missed: 0n };

/** Sockets per Snapshot part: ~150 bytes each, so parts stay near 75 KB. */
const SNAPSHOT_PART = 500;

/** A running agent. close() stops it; `finished` settles when it has stopped (rejects if the engine failed). */
export class Agent {
  readonly host: string;
  readonly port: number;
  readonly finished: Promise<void>;
  private readonly index: LeakIndex;
  private readonly metrics: AgentMetrics;
  private readonly hub: StreamHub;
  private readonly thresholdMs: number;
  private readonly hostname = os.hostname();
  private readonly startedMs = Date.now();
  private server: AgentServer | undefined;
  private web: WebConfig | undefined;
  private gaps: CapabilityGap[] = [];
  private watcher: PortAwareWatcher | undefined;
  private counter: StateCounter | undefined;
  private portCount: Promise<void> | undefined;
  private recorder: Recorder | undefined;
  private timer: NodeJS.Timeout | undefined;
  private counts: StateCount[] = [];
  private lastPorts: PortsSnapshot | undefined;
  private seq = 0;
  private intervals = 0;
  private lastSnapshotMs = 0;
  private lastPortsMs = 0;
  private failure: unknown;
  /** The last periodic count's failure, until one succeeds again. */
  private scanError: unknown;
  /** The last port count's failure, until one succeeds again. */
  private portError: unknown;
  private stopping = false;
  private busy = false;
  private pumping: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private settle: { resolve: () => void; reject: (err: unknown) => void } | undefined;

  /** Use startAgent(). */
  private constructor(private readonly options: AgentOptions) {
    this.host = options.host ?? '127.0.0.1';
    this.port = options.port ?? 9466;
    this.thresholdMs = options.thresholdMs ?? 30_000;
    const engine = (): PortAwareWatcher | undefined => this.watcher;
    this.index = new LeakIndex(options.maxSockets ?? 250_000, {
      get size() {
        return engine()?.size ?? 0;
      },
      leak: (cookie) => engine()?.leak(cookie),
      openCookies: () => engine()?.openCookies() ?? [],
      oldestReported: () => engine()?.oldestReported(),
      forEachHolder: (each) => engine()?.forEachHolder(each),
      countByRemote: () => engine()?.countByRemote() ?? new Map(),
      oldestEnteredNs: () => engine()?.oldestEnteredNs(),
      evict: (cookie) => engine()?.evict(cookie),
    });
    this.hub = new StreamHub(options.streamQueueBytes ?? 4 << 20, options.maxSubscribers ?? 16, () => this.snapshotParts());
    this.metrics = new AgentMetrics({
      leaks: this.index,
      top: options.top ?? 10,
      thresholdMs: this.thresholdMs,
      version: VERSION,
      stateCounts: () => this.counts,
      ports: () => this.lastPorts,
      kernel: () => this.watcher?.counters() ?? NO_COUNTERS,
      forecasts: () => this.watcher?.forecasts() ?? [],
      streamDropped: () => this.hub.dropped,
      subscribers: () => this.hub.size,
      streamQueuedBytes: () => this.hub.queuedBytes,
      recordingBytes: () => this.recorder?.bytesWritten ?? 0,
    });
    this.finished = new Promise((resolve, reject) => (this.settle = { resolve, reject }));
    this.finished.catch(() => undefined); // observed through `finished` by the caller
  }

  /** Starts everything; on failure nothing is left running. */
  static async start(options: AgentOptions): Promise<Agent> {
    validate(options);
    const agent = new Agent(options);
    try {
      await agent.begin();
    } catch (err) {
      await agent.shutdown();
      throw err;
    }
    return agent;
  }

  private async begin(): Promise<void> {
    const o = this.options;
    // Before any BPF is loaded: a wrong file is a one-line error, not a half-started agent.
    if (o.webConfigFile !== undefined) this.web = loadWebConfig(o.webConfigFile);
    this.gaps = capabilityGaps();
    // Then the recording: a file it refuses fails the start before any BPF is loaded too.
    if (o.recordPath !== undefined) {
      this.recorder = new Recorder(o.recordPath, {
        ...(o.recordMaxBytes !== undefined && { maxFileBytes: o.recordMaxBytes }),
        startFile: (rotated) => this.sessionStart(rotated),
      });
    }
    const btf = o.btfPath !== undefined ? { btfPath: o.btfPath } : {};
    this.counter = new StateCounter(btf);
    // Rescans read every CLOSE_WAIT socket, port scans every socket: less often than watch does, for good.
    this.watcher = watchWithPorts({
      thresholdMs: this.thresholdMs,
      maxSockets: Math.max(o.maxSockets ?? 0, TRACER_DEFAULTS.maxSockets),
      rescanMs: RESCAN_MS,
      ...(o.stacks && { stacks: true }),
      ports: { scanMs: PORT_SCAN_MS },
      ...((o.ports ?? true) && { onPortScan: (scanned: ReadonlyMap<number, Iterable<PortSocket>>) => this.countPorts(scanned) }),
      ...btf,
    });
    this.server = await startServer(this.host, this.port, {
      metrics: () => this.metrics.text(),
      unhealthy: () => this.unhealthy(),
      hub: this.hub,
    }, this.web);
    this.recorder?.start();
    this.pumping = this.pump(this.watcher);
    this.timer = setInterval(() => void this.interval(), o.intervalMs ?? 15_000);
    await this.interval();
  }

  /** The address actually bound (port resolved when 0 was asked). */
  get address(): { host: string; port: number } {
    const a = this.server?.address;
    return { host: a?.address ?? this.host, port: a?.port ?? this.port };
  }

  /** `https` when the web configuration has TLS, else `http`. */
  get scheme(): 'http' | 'https' {
    return this.web?.tls ? 'https' : 'http';
  }

  /**
   * What anyone who can reach the port gets without TLS or authentication:
   * undefined on loopback or when both are configured, else one sentence.
   */
  exposure(): string | undefined {
    if (!this.server) return undefined;
    return exposure(this.address.host, this.address.port, this.web);
  }

  /** Capabilities this process lacks and what the agent does not see without them (empty with all). */
  capabilityGaps(): readonly CapabilityGap[] {
    return this.gaps;
  }

  private unhealthy(): string | null {
    if (this.failure) return `leak engine failed: ${this.failure instanceof Error ? this.failure.message : String(this.failure)}`;
    if (this.recorder?.error) return `recording failed: ${this.recorder.error.message}`;
    if (this.scanError) return `socket count failed: ${this.scanError instanceof Error ? this.scanError.message : String(this.scanError)}`;
    if (this.portError) return `port count failed: ${this.portError instanceof Error ? this.portError.message : String(this.portError)}`;
    if (this.stopping) return 'stopping';
    return null;
  }

  private publish(body: RecordBody): void {
    const bytes = encodeRecord({ timeUnixMs: Date.now(), seq: ++this.seq, ...body });
    this.hub.publish(bytes);
    this.recorder?.append(bytes);
  }

  private async pump(source: AsyncIterable<AgentRecord>): Promise<void> {
    try {
      for await (const record of source) {
        if (record.type === 'leak' || record.type === 'resolved' || record.type === 'fd-closed') this.index.apply(record);
        this.metrics.observe(record);
        this.publish(toBody(record));
      }
    } catch (err) {
      if (this.stopping) return;
      this.failure = err;
      void this.close();
    }
  }

  /** Encoded Snapshot parts of `sockets` (at least one part, also when empty). */
  private *parts(takenAt: string, sockets: Iterable<SocketInfo>): Generator<Buffer> {
    let part = 0;
    let batch: SocketInfo[] = [];
    const meta = { thresholdMs: this.thresholdMs, host: this.hostname };
    const encode = (more: boolean): Buffer =>
      encodeRecord({ timeUnixMs: Date.now(), seq: 0, snapshot: toSnapshot({ takenAt, sockets: batch, lost: 0 }, { ...meta, part: part++, more }) });
    for (const s of sockets) {
      if (batch.length === SNAPSHOT_PART) {
        yield encode(true);
        batch = [];
      }
      batch.push(s);
    }
    yield encode(false);
  }

  /** What each recording file of this run starts with: a Session record, then the open leaks. */
  private *sessionStart(rotated: boolean): Generator<Buffer> {
    yield encodeRecord({
      timeUnixMs: Date.now(),
      seq: 0,
      session: { startedUnixMs: this.startedMs, pid: process.pid, host: this.hostname, version: VERSION, thresholdMs: this.thresholdMs, rotated },
    });
    yield* this.snapshotParts();
  }

  /** What the recorder did to an existing file at open (mode tightened, torn tail cut), one sentence each. */
  recordingNotes(): readonly string[] {
    return this.recorder?.notes ?? [];
  }

  /** The agent's open leaks as Snapshot parts, made as they are pulled. */
  private snapshotParts(): Generator<Buffer> {
    const now = Date.now();
    return this.parts(new Date(now).toISOString(), this.index.sockets());
  }

  private counters(): AgentCounters {
    const { emitted, lost, mapFull, missed } = this.watcher?.counters() ?? NO_COUNTERS;
    return { emitted, lost, mapFull, missed, evictions: this.index.evictions, streamDropped: this.hub.dropped };
  }

  /** Ports per destination from a scan the port watcher just made: at most once a minute (it scans more often when ports run short). */
  private countPorts(scanned: ReadonlyMap<number, Iterable<PortSocket>>): void {
    // Also while stopping: shutdown() awaits it before the recording closes.
    if (this.portCount || Date.now() - this.lastPortsMs < Math.max(PORT_SCAN_MS, this.options.intervalMs ?? 0)) return;
    this.lastPortsMs = Date.now();
    this.portCount = ports({ scanned })
      .then((counted) => {
        this.lastPorts = counted;
        this.portError = undefined;
        this.publish({ ports: toPorts(counted) });
      })
      .catch((err: unknown) => {
        if (!this.stopping) this.portError = err;
      })
      .finally(() => (this.portCount = undefined));
  }

  private async interval(): Promise<void> {
    if (this.busy) return; // a count slower than the interval: skip a beat rather than pile up
    this.busy = true;
    this.intervals++;
    try {
      if (this.counter) this.counts = await this.counter.count();
      this.scanError = undefined;
    } catch (err) {
      if (!this.stopping) this.scanError = err;
    } finally {
      this.busy = false;
    }
    if (this.stopping) return;
    this.publish({ counters: toCounters(this.counters()) });
    const now = Date.now();
    // The second Snapshot (first interval after start) replaces the start scan with what the engine confirmed.
    if (this.recorder && (this.intervals === 2 || now - this.lastSnapshotMs >= (this.options.snapshotEveryMs ?? 3_600_000))) {
      this.lastSnapshotMs = now;
      for (const part of this.parts(new Date(now).toISOString(), this.index.sockets())) this.recorder.append(part);
    }
  }

  /** How the engine's tracer hooks syscalls; undefined before it started. */
  hooks(): TracerHooks | undefined {
    return this.watcher?.hooks();
  }

  /** What it did so far. */
  status(): AgentStatus {
    const c = this.counters();
    return {
      leaksOpen: this.index.size,
      records: this.seq,
      ...c,
      missed: (this.watcher?.counters() ?? NO_COUNTERS).missed,
      recordingBytes: this.recorder?.bytesWritten ?? 0,
      recordingRotations: this.recorder?.rotations ?? 0,
      recordingError: this.recorder?.error,
    };
  }

  /** Stops: detaches the BPF programs, writes a last Counters record, flushes and closes the recording, closes the server. */
  close(): Promise<void> {
    this.closing ??= this.shutdown().then(
      () => (this.failure ? this.settle?.reject(this.failure) : this.settle?.resolve()),
      (err: unknown) => this.settle?.reject(err),
    );
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.stopping = true;
    clearInterval(this.timer);
    await this.watcher?.close();
    await this.pumping; // the engine's last records
    await this.portCount;
    if (this.watcher) this.publish({ counters: toCounters(this.counters()) });
    this.recorder?.close();
    await this.server?.close();
    this.counter?.close();
  }
}

/** Starts an agent. Throws a SockleakError subclass on bad options or environment. */
export function startAgent(options: AgentOptions = {}): Promise<Agent> {
  return Agent.start(options);
}
