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
 * The one cookie hash table: an index of integer cookies (below 2^53) that
 * live in a caller's column, `keys[row]`. Open addressing, linear probing, a
 * bucket holds row + 1 (0: empty), at most 70% full; backward-shift deletion,
 * so no tombstones and lookups stay short under churn. Text keys are the
 * caller's (a plain Map).
 */
export class CookieIndex {
  private buckets = new Int32Array(0);
  private shift = 32;
  private keys: Float64Array = new Float64Array(0);

  /** Empties the index and sizes it for `rows` rows of `keys` (at least 2^minBits buckets). */
  reset(keys: Float64Array, rows: number, minBits = 4): void {
    let bits = minBits;
    while ((1 << bits) * 0.7 < rows) bits++;
    this.buckets = new Int32Array(1 << bits);
    this.shift = 32 - bits;
    this.keys = keys;
  }

  /** The row of `key`; -1 when absent. */
  find(key: number): number {
    const mask = this.buckets.length - 1;
    if (mask < 0) return -1;
    for (let i = cookieHash(key, this.shift); ; i = (i + 1) & mask) {
      const v = this.buckets[i]!;
      if (v === 0) return -1;
      if (this.keys[v - 1] === key) return v - 1;
    }
  }

  /** Indexes `row` under its key, which it must not have yet. */
  add(row: number): void {
    const mask = this.buckets.length - 1;
    let i = cookieHash(this.keys[row]!, this.shift);
    while (this.buckets[i] !== 0) i = (i + 1) & mask;
    this.buckets[i] = row + 1;
  }

  /** Unindexes `row`, which must be indexed (its key unchanged since). */
  remove(row: number): void {
    const mask = this.buckets.length - 1;
    let i = cookieHash(this.keys[row]!, this.shift);
    while (this.buckets[i] !== row + 1) i = (i + 1) & mask;
    for (let j = (i + 1) & mask; this.buckets[j] !== 0; j = (j + 1) & mask) {
      const h = cookieHash(this.keys[this.buckets[j]! - 1]!, this.shift);
      if ((j > i && (h <= i || h > j)) || (j < i && h <= i && h > j)) {
        this.buckets[i] = this.buckets[j]!;
        i = j;
      }
    }
    this.buckets[i] = 0;
  }
}

/**
 * Cookie → non-negative integer in typed arrays, sized once: ~18 bytes an
 * entry where a Map takes ~40 and boxes cookies past 2^31. The leak engine's
 * set of new leaks in a step is one: 200k entries at a restart. Cookies past
 * 2^53 (text keys) go to a plain Map.
 */
export class CookieMap implements CookieSet {
  private readonly keys_: Float64Array;
  private readonly values: Int32Array;
  private readonly index = new CookieIndex();
  private readonly text = new Map<string, number>();
  private rows = 0;

  /** Room for `capacity` entries; more than that is a caller's error (it sizes the map from what it will add). */
  constructor(private readonly capacity: number) {
    this.keys_ = new Float64Array(capacity);
    this.values = new Int32Array(capacity);
    this.index.reset(this.keys_, capacity);
  }

  get size(): number {
    return this.rows + this.text.size;
  }

  /** The value of `key`; -1 when absent. */
  get(key: CookieKey): number {
    if (typeof key === 'string') return this.text.get(key) ?? -1;
    const row = this.index.find(key);
    return row < 0 ? -1 : this.values[row]!;
  }

  has(key: CookieKey): boolean {
    return this.get(key) >= 0;
  }

  /** Sets `key` to `value` (>= 0). */
  set(key: CookieKey, value: number): void {
    if (typeof key !== 'string') {
      const row = this.index.find(key);
      if (row >= 0) {
        this.values[row] = value;
        return;
      }
    } else if (this.text.has(key)) {
      this.text.set(key, value);
      return;
    }
    if (this.size >= this.capacity) throw new RangeError(`CookieMap sized for ${this.capacity} entries`);
    if (typeof key === 'string') this.text.set(key, value);
    else {
      this.keys_[this.rows] = key;
      this.values[this.rows] = value;
      this.index.add(this.rows++);
    }
  }

  *keys(): Generator<CookieKey> {
    for (let row = 0; row < this.rows; row++) yield this.keys_[row]!;
    yield* this.text.keys();
  }
}
