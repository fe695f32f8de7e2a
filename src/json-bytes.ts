/**
 * A JSON document written as bytes into chunk-sized Buffers, for output too
 * large to build as strings first. `snapshot --json` as template strings made
 * dozens of short-lived strings per socket, flattened them by join() and
 * encoded them again to write: a large part of the command's time, much of it
 * scavenges (docs/benchmarks.md, "Figures behind design choices"). Here text that repeats is encoded once by the
 * caller and copied; numbers are written digit by digit.
 */

/** ASCII or UTF-8 text as the bytes to copy. */
export const encoded = (text: string): Uint8Array => Buffer.from(text, 'utf8');

const NULL = encoded('null');
const TRUE = encoded('true');
const FALSE = encoded('false');
const ZERO = 48;

export class JsonBytes {
  private buf: Buffer;
  private at = 0;

  /** `chunkBytes`: about how much each chunk holds (full() says when to take() it). */
  constructor(private readonly chunkBytes = 1 << 20) {
    this.buf = Buffer.allocUnsafe(chunkBytes + (chunkBytes >> 3));
  }

  /** Text encoded already. */
  bytes(text: Uint8Array): void {
    if (this.at + text.length > this.buf.length) this.grow(text.length);
    this.buf.set(text, this.at);
    this.at += text.length;
  }

  /** A non-negative integer below 2^53. */
  uint(n: number): void {
    if (this.at + 16 > this.buf.length) this.grow(16);
    const buf = this.buf;
    if (n < 10) {
      buf[this.at++] = ZERO + n;
      return;
    }
    let digits = 1;
    for (let rest = n; rest >= 10; rest = Math.floor(rest / 10)) digits++;
    let i = (this.at += digits);
    while (n >= 10) {
      const digit = n % 10;
      buf[--i] = ZERO + digit;
      n = (n - digit) / 10;
    }
    buf[--i] = ZERO + n;
  }

  /** null, or a non-negative integer below 2^53. */
  uintOrNull(n: number | null): void {
    if (n === null) this.bytes(NULL);
    else this.uint(n);
  }

  bool(b: boolean): void {
    this.bytes(b ? TRUE : FALSE);
  }

  /** Whether the current chunk is full: take() it before writing on. */
  full(): boolean {
    return this.at >= this.chunkBytes;
  }

  /** What was written since the last take() (a Buffer of its own), or undefined if nothing. */
  take(): Buffer | undefined {
    if (this.at === 0) return undefined;
    const chunk = this.buf.subarray(0, this.at);
    this.buf = Buffer.allocUnsafe(this.chunkBytes + (this.chunkBytes >> 3));
    this.at = 0;
    return chunk;
  }

  /** Room for `more` bytes past the end (one socket's text outgrew the slack: a socket with very many owners). */
  private grow(more: number): void {
    const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.at + more));
    this.buf.copy(bigger, 0, 0, this.at);
    this.buf = bigger;
  }
}
