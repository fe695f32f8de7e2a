/**
 * `--record FILE`: the agent's record stream appended to a file, in the same
 * framing as /stream (length-delimited Record messages). A restart appends a
 * new session (a Session record, then a Snapshot) to what the file holds;
 * `sockleak report` reads every session.
 *
 * Records are gathered in memory and written with one write(2) at least every
 * `flushMs` (default 1 s), or sooner once `maxBufferedBytes` are waiting; a
 * written record is in the page cache, so a kill -9 loses at most the records
 * of the last second (a power cut loses what the kernel had not written back:
 * there is no fsync). Whole records are written by one call, so a file is cut
 * only between records unless the disk fills up; `sockleak report` names the
 * offset either way. If writing fails, the recorder stops, keeps the error, and
 * counts what it could not write; it never buffers without bound.
 *
 * The file is private (0600: it names processes, peers and users); a wider
 * mode found on an existing file is tightened. At open, an existing file is
 * walked frame by frame: one that does not start with a record is refused
 * (never appended to: it is not a recording), and a torn last record (the
 * previous run cut off mid-write) is cut off, since no reader could get past
 * it to the sessions appended after. Past `maxFileBytes` the file is renamed
 * to FILE.1 (replacing the one before) and a new FILE begins with the
 * `startFile(true)` records, so each file replays on its own.
 */
import { closeSync, fchmodSync, fstatSync, ftruncateSync, openSync, readSync, renameSync, writeSync } from 'node:fs';
import { MAX_RECORD_BYTES } from './recording';
import { NotFoundError, SockleakError, ExitCode, UsageError } from '../errors';
import { decodeRecordBytes } from './schema';

export interface RecorderOptions {
  /** At most this long between a record and its write(2), ms. Default 1000. */
  flushMs?: number;
  /** Write as soon as this many bytes wait. Default 1 MiB. */
  maxBufferedBytes?: number;
  /** Rotate to FILE.1 before the file would grow past this many bytes. Default 256 MiB. */
  maxFileBytes?: number;
  /**
   * The records each file of this run starts with (a Session record and a
   * Snapshot): when the recorder opens FILE, and after each rotation
   * (`rotated` true). Encoded, framed.
   */
  startFile?: (rotated: boolean) => Iterable<Buffer>;
}

/** Default `maxFileBytes`. */
export const DEFAULT_RECORD_MAX_BYTES = 256 << 20;

/** Where an existing file's complete records end. */
interface Frames {
  /** Offset just past the last complete record. */
  end: number;
  /** Why the bytes from `end` on are not a record, when there are some. */
  torn: string | undefined;
}

/** Walks the length prefixes of fd's `size` bytes (no decoding): where the whole records end. */
function walkFrames(fd: number, size: number): Frames {
  const chunk = Buffer.allocUnsafe(1 << 20);
  let at = 0;
  let base = -1; // file offset of chunk[0]; -1: nothing read
  let got = 0;
  const byte = (offset: number): number => {
    if (offset < base || offset >= base + got) {
      base = offset;
      got = readSync(fd, chunk, 0, chunk.length, offset);
    }
    return chunk[offset - base]!;
  };
  while (at < size) {
    let len = 0;
    let i = 0;
    for (;; i++) {
      if (at + i >= size) return { end: at, torn: 'the file ends inside a length prefix' };
      const b = byte(at + i);
      if (i === 4 && b > 0x0f) return { end: at, torn: 'an invalid length prefix' };
      len += (b & 0x7f) * 2 ** (7 * i);
      if ((b & 0x80) === 0) break;
    }
    // The agent never writes an empty record: zeros are a hole (a crash before the data reached the disk).
    if (len === 0 || len > MAX_RECORD_BYTES) return { end: at, torn: `an implausible record length ${len}` };
    const next = at + i + 1 + len;
    if (next > size) return { end: at, torn: `a record of ${len} bytes with ${size - at - i - 1} present` };
    at = next;
  }
  return { end: at, torn: undefined };
}

/** Whether the file starts with a record that decodes and has a time (what every agent record has). */
function firstRecordValid(fd: number, size: number): boolean {
  const head = Buffer.alloc(Math.min(size, 16 << 10));
  readSync(fd, head, 0, head.length, 0);
  let len = 0;
  let i = 0;
  for (; i < 5 && i < head.length; i++) {
    len += (head[i]! & 0x7f) * 2 ** (7 * i);
    if ((head[i]! & 0x80) === 0) break;
  }
  if (i >= 5 || len === 0 || len > MAX_RECORD_BYTES) return false;
  const body = Buffer.alloc(len);
  if (readSync(fd, body, 0, len, i + 1) !== len) return false;
  try {
    return Number(decodeRecordBytes(body).timeUnixMs) > 0;
  } catch {
    return false;
  }
}

function openFailure(file: string, err: unknown): Error {
  const e = err as NodeJS.ErrnoException;
  if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return new NotFoundError(`--record ${file}: no such directory`);
  if (e.code === 'EACCES' || e.code === 'EPERM' || e.code === 'EROFS') return new SockleakError(`--record ${file}: permission denied`, ExitCode.NO_PERMISSION);
  if (e.code === 'EISDIR') return new UsageError(`--record ${file}: a directory, not a file`);
  return new UsageError(`--record ${file}: ${e.code ?? e.message}`);
}

/** One agent run's recording: append(), flushed on a timer; close() at the end. */
export class Recorder {
  private fd: number;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private readonly timer: NodeJS.Timeout;
  private readonly maxBufferedBytes: number;
  private readonly maxFileBytes: number;
  private readonly startFile: (rotated: boolean) => Iterable<Buffer>;
  private written = 0;
  /** Size of the current file, as far as this recorder wrote it. */
  private fileBytes = 0;
  /** Bytes of the records the current file was started with: rotating before more would loop. */
  private headerBytes = 0;
  private lostRecords = 0;
  private rotationCount = 0;
  private failure: Error | undefined;
  private closed = false;
  private started = false;
  /** What the recorder did to the file at open, one sentence each, for the CLI to print. */
  readonly notes: string[] = [];

  /**
   * Opens `file` for appending (creating it 0600) and checks what it holds;
   * writes nothing until start(). Throws NotFoundError, UsageError or
   * SockleakError(NO_PERMISSION) when it cannot, and UsageError for an
   * existing file that is not a recording.
   */
  constructor(
    readonly file: string,
    options: RecorderOptions = {},
  ) {
    this.maxBufferedBytes = options.maxBufferedBytes ?? 1 << 20;
    this.maxFileBytes = options.maxFileBytes ?? DEFAULT_RECORD_MAX_BYTES;
    this.startFile = options.startFile ?? (() => []);
    this.fd = this.openChecked();
    this.timer = setInterval(() => this.flush(), options.flushMs ?? 1000);
    this.timer.unref();
  }

  /**
   * Writes the session's first records (`startFile(false)`), after the agent
   * is up: a start that fails after the file was checked leaves no session
   * behind. A file already at its bound is rotated to FILE.1 first.
   */
  start(): void {
    if (this.started || this.failure) return;
    this.started = true;
    if (this.fileBytes >= this.maxFileBytes) {
      this.notes.push(`${this.file} had reached the size bound (${this.fileBytes} bytes): its sessions so far are now ${this.file}.1`);
      this.rotate(false);
    } else {
      this.writeStart(false);
    }
  }

  private openChecked(): number {
    let fd: number;
    try {
      fd = openSync(this.file, 'a+', 0o600);
    } catch (err) {
      throw openFailure(this.file, err);
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new UsageError(`--record ${this.file}: not a regular file`);
      if (st.size > 0) {
        if (!firstRecordValid(fd, st.size)) {
          throw new UsageError(`--record ${this.file}: exists and is not a sockleak recording; move it away or name another file`);
        }
        const frames = walkFrames(fd, st.size);
        if (frames.torn !== undefined) {
          ftruncateSync(fd, frames.end);
          this.notes.push(`${this.file}: cut ${st.size - frames.end} bytes at byte offset ${frames.end} (${frames.torn}: the last run stopped mid-write); the sessions before are kept`);
        }
        this.fileBytes = frames.end;
      }
      if ((st.mode & 0o077) !== 0) {
        fchmodSync(fd, 0o600);
        this.notes.push(`${this.file} was mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}: now 0600 (recordings name processes and peers)`);
      }
      return fd;
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  private writeAll(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) at += writeSync(this.fd, chunk, at, chunk.length - at);
    this.written += chunk.length;
    this.fileBytes += chunk.length;
  }

  /** Writes the records a file of this run starts with, now. */
  private writeStart(rotated: boolean): void {
    const before = this.fileBytes;
    try {
      for (const record of this.startFile(rotated)) this.writeAll(record);
    } catch (err) {
      this.failure = err as Error;
    }
    this.headerBytes = this.fileBytes - before;
  }

  /** FILE → FILE.1, a new FILE that starts like a session. */
  private rotate(rotated: boolean): void {
    try {
      renameSync(this.file, `${this.file}.1`);
      const fd = openSync(this.file, 'a+', 0o600);
      closeSync(this.fd);
      this.fd = fd; // only now: close() always has one open fd to close
    } catch (err) {
      this.failure = err as Error;
      return;
    }
    this.fileBytes = 0;
    this.rotationCount++;
    this.writeStart(rotated);
  }

  /** Queues one encoded record (start() first); rotates first when it would take the file past its bound. */
  append(record: Buffer): void {
    if (!this.started) this.start();
    if (this.closed || this.failure) {
      this.lostRecords++;
      return;
    }
    const size = this.fileBytes + this.pendingBytes;
    if (size + record.length > this.maxFileBytes && size > this.headerBytes) {
      this.flush();
      if (!this.failure) this.rotate(true);
      if (this.failure) {
        this.lostRecords++;
        return;
      }
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
      this.writeAll(chunk);
    } catch (err) {
      this.failure = err as Error;
      this.lostRecords += records;
    }
  }

  /** Bytes this recorder wrote (all files), so far. */
  get bytesWritten(): number {
    return this.written;
  }

  /** Times the file was rotated to FILE.1. */
  get rotations(): number {
    return this.rotationCount;
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
