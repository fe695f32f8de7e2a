/**
 * Socket cookies as keys: CookieKey (a number while exact, else text), the
 * sets the scan passes look for, and CookieMap, the one cookie hash table.
 */
const TWO_32 = 4294967296;

/**
 * A socket cookie as a Map key: the number while it is exact (below 2^53, which
 * a kernel counter does not reach in practice), else its decimal text. A number
 * costs no string per socket kept or per record read.
 */
export type CookieKey = number | string;

/** The key of a cookie in its decimal text form (as records carry it). */
export function cookieKey(cookie: string): CookieKey {
  const n = Number(cookie);
  return Number.isSafeInteger(n) ? n : cookie;
}

/** The decimal text of a cookie key. */
export function cookieText(key: CookieKey): string {
  return typeof key === 'number' ? String(key) : key;
}

/** The key of the u64 cookie at `offset`. */
export function cookieKeyAt(buf: Buffer, offset: number): CookieKey {
  const hi = buf.readUInt32LE(offset + 4);
  return hi < 0x200000 ? hi * 0x100000000 + buf.readUInt32LE(offset) : buf.readBigUInt64LE(offset).toString();
}

/** Cookies a pass looks for (a Set, a Map, or a union of them). */
export interface CookieSet {
  has(cookie: CookieKey): boolean;
  readonly size: number;
  keys(): Iterable<CookieKey>;
}
/** Fibonacci hash of an integer cookie below 2^53 to `32 - shift` bits. */
export function cookieHash(cookie: number, shift: number): number {
  return Math.imul((cookie >>> 0) ^ Math.floor(cookie / TWO_32), 0x9e3779b1) >>> shift;
}

/**
 * Cookie → non-negative integer in typed arrays (open addressing, linear
 * probing, sized once): ~17 bytes an entry where a Map takes ~40 and boxes
 * cookies past 2^31. The leak engine's set of new leaks in a step is one: 200k
 * entries at a restart. Cookies past 2^53 (text keys) go to a plain Map.
 */
export class CookieMap implements CookieSet {
  private readonly keys_: Float64Array; // -1: empty
  private readonly values: Int32Array;
  private readonly shift: number;
  private readonly text = new Map<string, number>();
  private count = 0;

  /** Room for `capacity` entries; more than that is a caller's error (it sizes the map from what it will add). */
  constructor(private readonly capacity: number) {
    let bits = 4;
    while ((1 << bits) * 0.7 < capacity) bits++;
    this.keys_ = new Float64Array(1 << bits).fill(-1);
    this.values = new Int32Array(1 << bits);
    this.shift = 32 - bits;
  }

  get size(): number {
    return this.count;
  }

  /** The value of `key`; -1 when absent. */
  get(key: CookieKey): number {
    if (typeof key === 'string') return this.text.get(key) ?? -1;
    const mask = this.keys_.length - 1;
    for (let i = cookieHash(key, this.shift); ; i = (i + 1) & mask) {
      const k = this.keys_[i]!;
      if (k === key) return this.values[i]!;
      if (k === -1) return -1;
    }
  }

  has(key: CookieKey): boolean {
    return this.get(key) >= 0;
  }

  /** Sets `key` to `value` (>= 0). */
  set(key: CookieKey, value: number): void {
    if (typeof key === 'string') {
      if (!this.text.has(key)) this.count++;
      this.text.set(key, value);
      return;
    }
    const mask = this.keys_.length - 1;
    let i = cookieHash(key, this.shift);
    while (this.keys_[i] !== -1 && this.keys_[i] !== key) i = (i + 1) & mask;
    if (this.keys_[i] === -1) {
      if (this.count >= this.capacity) throw new RangeError(`CookieMap sized for ${this.capacity} entries`);
      this.count++;
    }
    this.keys_[i] = key;
    this.values[i] = value;
  }

  *keys(): Generator<CookieKey> {
    for (const k of this.keys_) if (k !== -1) yield k;
    yield* this.text.keys();
  }
}
