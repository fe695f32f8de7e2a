/**
 * The readers of C strings. The kernel's fixed-size ones (task comm in struct
 * sl_event, sl_sock and sl_close_count): latin1, so any byte round-trips, up to
 * the first NUL or the field's end (a 15-byte comm fills TASK_COMM_LEN but for its NUL).
 * String tables' names (ELF symbols, Go's pclntab): UTF-8, up to their NUL.
 */

/** The C string in `buf[start, start + size)`. */
export function cString(buf: Buffer, start: number, size: number): string {
  let end = start;
  while (end < start + size && buf[end] !== 0) end++;
  return buf.toString('latin1', start, end);
}

/** Whether `buf[start, start + size)` holds exactly `text` as a C string (compared in place: no string made). */
export function cStringEquals(buf: Buffer, start: number, size: number, text: string): boolean {
  const n = text.length;
  if (n > size || (n < size && buf[start + n] !== 0)) return false;
  for (let i = 0; i < n; i++) if (buf[start + i] !== text.charCodeAt(i)) return false;
  return true;
}

/**
 * The NUL-terminated UTF-8 string at `buf[at]` in a string table (ELF's .strtab, Go's function and
 * file name tables); null when no NUL ends it before the buffer does.
 */
export function tableString(buf: Buffer, at: number): string | null {
  const end = buf.indexOf(0, at);
  return end < 0 ? null : buf.toString('utf8', at, end);
}
