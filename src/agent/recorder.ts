/**
 * `--record FILE`: the agent's record stream appended to a file, in the same
 * framing as /stream (length-delimited Record messages).
 *
 * Records are gathered in memory and written with one write(2) at least every
 * `flushMs` (default 1 s), or sooner once `maxBufferedBytes` are waiting; a
 * written record is in the page cache, so a kill -9 loses at most the records
 * of the last second (a power cut loses what the kernel had not written back:
 * there is no fsync). Whole records are written by one call, so a file is cut
 * only between records unless the disk fills up; `sockleak report` names the
 * offset either way. If writing fails, the recorder stops, keeps the error, and
 * counts what it could not write; it never buffers without bound.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { NotFoundError, SockleakError, ExitCode, UsageError } from '../errors';

export interface RecorderOptions {
  /** At most this long between a record and its write(2), ms. Default 1000. */
  flushMs?: number;
  /** Write as soon as this many bytes wait. Default 1 MiB. */
  maxBufferedBytes?: number;
}

export class Recorder {
  private readonly fd: number;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private readonly timer: NodeJS.Timeout;
  private readonly maxBufferedBytes: number;
  private written = 0;
  private lostRecords = 0;
  private failure: Error | undefined;
  private closed = false;

  /** Creates (or truncates) `file`. Throws NotFoundError/UsageError when it cannot. */
  constructor(
    readonly file: string,
    options: RecorderOptions = {},
  ) {
    this.maxBufferedBytes = options.maxBufferedBytes ?? 1 << 20;
    try {
      this.fd = openSync(file, 'w', 0o644);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'ENOENT') throw new NotFoundError(`--record ${file}: no such directory`);
      if (e.code === 'EACCES' || e.code === 'EPERM') throw new SockleakError(`--record ${file}: permission denied`, ExitCode.NO_PERMISSION);
      throw new UsageError(`--record ${file}: ${e.code ?? e.message}`);
    }
    this.timer = setInterval(() => this.flush(), options.flushMs ?? 1000);
    this.timer.unref();
  }

  /** Queues one encoded record. */
  append(record: Buffer): void {
    if (this.closed || this.failure) {
      this.lostRecords++;
      return;
    }
    this.pending.push(record);
    this.pendingBytes += record.length;
    if (this.pendingBytes >= this.maxBufferedBytes) this.flush();
  }

  /** Writes everything queued now. */
  flush(): void {
    if (this.pending.length === 0 || this.failure) return;
    const chunk = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    const records = this.pending.length;
    this.pending = [];
    this.pendingBytes = 0;
    try {
      let at = 0;
      while (at < chunk.length) at += writeSync(this.fd, chunk, at, chunk.length - at);
      this.written += chunk.length;
    } catch (err) {
      this.failure = err as Error;
      this.lostRecords += records;
    }
  }

  /** Bytes written to the file so far. */
  get bytesWritten(): number {
    return this.written;
  }

  /** Records not written because writing failed. */
  get lost(): number {
    return this.lostRecords;
  }

  /** The write error that stopped the recording, if any. */
  get error(): Error | undefined {
    return this.failure;
  }

  /** Flushes and closes the file. */
  close(): void {
    if (this.closed) return;
    clearInterval(this.timer);
    this.flush();
    this.closed = true;
    closeSync(this.fd);
  }
}
