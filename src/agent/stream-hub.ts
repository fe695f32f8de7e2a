/**
 * Fan-out of encoded records to /stream subscribers, with back-pressure that
 * costs the agent a bounded amount of memory whatever the subscribers do.
 *
 * A subscriber first gets a Snapshot of the leaks open now, made part by part
 * only as fast as its socket takes them, then every record as it happens.
 * Each record is encoded once and the same Buffer is queued for everyone; a
 * subscriber's queue holds at most `queueBytes`. When a record would overflow
 * it, every record still queued (the oldest it has not read) is dropped and
 * counted, and the subscriber next gets a Gap record saying how many it lost,
 * then a fresh Snapshot, then the records since: it resynchronises instead of
 * going on with a hole. Bytes go to the socket only while it accepts them
 * without buffering (no writableNeedDrain), so Node's own buffer never holds
 * more than about one record per subscriber.
 */
import { encodeRecord } from '../recording/schema';

/** Where a subscriber's bytes go: an http.ServerResponse, or any stream.Writable. */
export interface SubscriberSink {
  write(chunk: Buffer): boolean;
  readonly writableNeedDrain: boolean;
  once(event: 'drain', listener: () => void): unknown;
}

/** Makes a subscriber's snapshot lazily: each next() encodes one part. */
export type SnapshotSource = () => Iterator<Buffer>;

class Subscriber {
  private queue: Buffer[] = [];
  private head = 0;
  private bytes = 0;
  private gapRecords = 0;
  private gapBytes = 0;
  private snapshot: Iterator<Buffer> | undefined;
  private waiting = false;
  private closed = false;

  constructor(
    private readonly sink: SubscriberSink,
    private readonly queueBytes: number,
    private readonly snapshots: SnapshotSource,
    private readonly onDrop: (records: number) => void,
  ) {
    this.snapshot = snapshots();
    this.flush();
  }

  get queuedBytes(): number {
    return this.bytes;
  }

  close(): void {
    this.closed = true;
    this.queue = [];
    this.head = 0;
    this.bytes = 0;
    this.snapshot = undefined;
  }

  push(record: Buffer): void {
    if (this.closed) return;
    if (this.bytes + record.length > this.queueBytes && this.head < this.queue.length) {
      const dropped = this.queue.length - this.head;
      this.gapRecords += dropped;
      this.gapBytes += this.bytes;
      this.onDrop(dropped);
      this.queue = [];
      this.head = 0;
      this.bytes = 0;
      this.snapshot = undefined; // a half-sent snapshot is worthless now: start a fresh one after the Gap
    }
    this.queue.push(record);
    this.bytes += record.length;
    this.flush();
  }

  /** The next bytes to send, in order: Gap, snapshot parts, queued records. */
  private next(): Buffer | undefined {
    if (this.gapRecords) {
      const gap = encodeRecord({ timeUnixMs: Date.now(), seq: 0, gap: { droppedRecords: this.gapRecords, droppedBytes: this.gapBytes } });
      this.gapRecords = 0;
      this.gapBytes = 0;
      this.snapshot = this.snapshots();
      return gap;
    }
    if (this.snapshot) {
      const part = this.snapshot.next();
      if (!part.done) return part.value;
      this.snapshot = undefined;
    }
    if (this.head < this.queue.length) {
      const record = this.queue[this.head]!;
      this.queue[this.head++] = EMPTY;
      this.bytes -= record.length;
      if (this.head === this.queue.length) {
        this.queue = [];
        this.head = 0;
      }
      return record;
    }
    return undefined;
  }

  private flush(): void {
    if (this.closed) return;
    while (!this.sink.writableNeedDrain) {
      const bytes = this.next();
      if (!bytes) return;
      this.sink.write(bytes);
    }
    if (!this.waiting) {
      this.waiting = true;
      this.sink.once('drain', () => {
        this.waiting = false;
        this.flush();
      });
    }
  }
}

const EMPTY = Buffer.alloc(0);

/** The set of live subscribers. */
export class StreamHub {
  private readonly subscribers = new Set<Subscriber>();
  private droppedTotal = 0;

  /**
   * `queueBytes`: bound of each subscriber's queue; `maxSubscribers`: more are
   * refused, so the agent's stream memory is at most about their product.
   */
  constructor(
    private readonly queueBytes: number,
    readonly maxSubscribers: number,
    private readonly snapshots: SnapshotSource,
  ) {}

  /** Adds a subscriber; returns its removal, or null when there are already maxSubscribers. */
  subscribe(sink: SubscriberSink): (() => void) | null {
    if (this.subscribers.size >= this.maxSubscribers) return null;
    const s = new Subscriber(sink, this.queueBytes, this.snapshots, (n) => (this.droppedTotal += n));
    this.subscribers.add(s);
    return () => {
      s.close();
      this.subscribers.delete(s);
    };
  }

  /** Queues one encoded record for every subscriber. */
  publish(record: Buffer): void {
    for (const s of this.subscribers) s.push(record);
  }

  /** Subscribers connected now. */
  get size(): number {
    return this.subscribers.size;
  }

  /** Records dropped for slow subscribers since the start, all together. */
  get dropped(): number {
    return this.droppedTotal;
  }

  /** Bytes queued for all subscribers now. */
  get queuedBytes(): number {
    let n = 0;
    for (const s of this.subscribers) n += s.queuedBytes;
    return n;
  }
}
