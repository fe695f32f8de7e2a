/**
 * Reading a recording (`sockleak agent --record`) or a saved /stream:
 * length-delimited sockleak.v1.Record messages (proto/sockleak.proto), read
 * in chunks so that a recording of any size takes bounded memory. Needs no
 * privileges and never touches BPF.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { decodeRecordBytes } from './schema';
import type { RecordMessage } from './messages';
import { DataError, NotFoundError, SockleakError, ExitCode } from '../errors';

/** Larger length prefixes are taken for corruption (the agent's largest records are ~100 KB). */
export const MAX_RECORD_BYTES = 64 << 20;

const CHUNK = 1 << 20;

/** One record and where it starts in the file. */
export interface RecordAt {
  offset: number;
  record: RecordMessage;
}

/**
 * Reads varint-length-prefixed messages from `file` in order. Throws
 * NotFoundError if it does not exist, and — after yielding every record
 * before it — a DataError naming the byte offset of the first record that is
 * truncated or corrupt.
 */
export function* readRecording(file: string): Generator<RecordAt> {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new NotFoundError(`${file}: no such file`);
    if (e.code === 'EACCES') throw new SockleakError(`${file}: permission denied`, ExitCode.NO_PERMISSION);
    throw new DataError(`${file}: ${e.code ?? e.message}`);
  }
  try {
    let buf = Buffer.alloc(0);
    let base = 0; // file offset of buf[0]
    let eof = false;
    /** Makes at least `n` bytes available in buf; false when the file ends first. */
    const need = (n: number): boolean => {
      while (buf.length < n && !eof) {
        const chunk = Buffer.allocUnsafe(Math.max(CHUNK, n - buf.length));
        let got: number;
        try {
          got = readSync(fd, chunk, 0, chunk.length, base + buf.length);
        } catch (err) {
          const e = err as NodeJS.ErrnoException;
          throw new DataError(`${file}: cannot read at byte offset ${base + buf.length} (${e.code === 'EISDIR' ? 'a directory, not a recording' : (e.code ?? e.message)})`);
        }
        if (got === 0) eof = true;
        else buf = buf.length ? Buffer.concat([buf, chunk.subarray(0, got)]) : chunk.subarray(0, got);
      }
      return buf.length >= n;
    };
    for (;;) {
      if (!need(1)) return;
      // varint length: at most 5 bytes for a uint32
      let len = 0;
      let i = 0;
      for (;; i++) {
        if (!need(i + 1)) throw new DataError(`${file}: truncated record at byte offset ${base} (the file ends inside its length prefix)`);
        const b = buf[i]!;
        if (i === 4 && b > 0x0f) throw new DataError(`${file}: corrupt record at byte offset ${base} (invalid length prefix)`);
        len += (b & 0x7f) * 2 ** (7 * i);
        if ((b & 0x80) === 0) break;
      }
      const head = i + 1;
      if (len > MAX_RECORD_BYTES) throw new DataError(`${file}: corrupt record at byte offset ${base} (length ${len} is implausible)`);
      if (!need(head + len)) {
        throw new DataError(`${file}: truncated record at byte offset ${base} (${len} bytes announced, ${buf.length - head} present)`);
      }
      let record: RecordMessage;
      try {
        record = decodeRecordBytes(buf.subarray(head, head + len));
      } catch (err) {
        throw new DataError(`${file}: corrupt record at byte offset ${base} (${(err as Error).message})`);
      }
      // Every record the agent writes has a time; zeros (a hole in the file) decode to empty records without one.
      if (!(Number(record.timeUnixMs) > 0)) throw new DataError(`${file}: corrupt record at byte offset ${base} (no timestamp)`);
      yield { offset: base, record };
      buf = buf.subarray(head + len);
      base += head + len;
    }
  } finally {
    closeSync(fd);
  }
}
