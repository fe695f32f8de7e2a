/**
 * The one reader of the kernel's fixed-size C strings (task comm in struct
 * sl_event, sl_sock and sl_close_count): latin1, so any byte round-trips, up to
 * the first NUL or the field's end (a 15-byte comm fills TASK_COMM_LEN but for its NUL).
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
