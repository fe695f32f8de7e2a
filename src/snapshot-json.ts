/**
 * `snapshot --json` written straight from a scan's records: the document
 * JSON.stringify(snapshot()) would give, without a SocketInfo per socket first.
 * At 10k sockets, making those objects, stringifying them and collecting them
 * again took most of a one-shot snapshot's time after start-up. SockDecoder
 * renders a record both ways from the same field readers.
 */
import { SOCK_SIZE } from './generated/layout';
import type { RawScan } from './scan';
import { SockDecoder } from './sock-decoder';

/**
 * Sockets per chunk (one write each, ~300 bytes a socket). Small: a socket's
 * text is a tree of short strings until the chunk is joined, and everything
 * still in `slice` when the young generation fills is copied by the scavenge.
 */
const SLICE = 256;

/**
 * The JSON document of a snapshot (and a newline), a chunk at a time: the same
 * sockets in the same order as SocketScanner.scan() gives them (owned ones by
 * their first record, then orphans), owners merged, `olderThanMs` applied.
 */
export function* snapshotJson(raw: RawScan, takenAt: string, olderThanMs?: number): Generator<string> {
  yield `{"takenAt":${JSON.stringify(takenAt)},"sockets":[`;
  let first = true;
  const slice: string[] = [];
  const flush = function* (): Generator<string> {
    if (!slice.length) return;
    yield (first ? '' : ',') + slice.join(',');
    first = false;
    slice.length = 0;
  };
  const keep = (decoder: SockDecoder, at: number): number | null | false => {
    const age = decoder.stateAgeMs(at);
    return olderThanMs === undefined || (age !== null && age >= olderThanMs) ? age : false;
  };

  const owned = new SockDecoder(raw.owned);
  const records = raw.owned.length / SOCK_SIZE;
  // Usually every record is a socket of its own: nothing to merge.
  const merged = raw.ownedCookies.size < records ? ownedSockets(owned, raw.owned.length) : undefined;
  for (let at = 0; at + SOCK_SIZE <= raw.owned.length; at += SOCK_SIZE) {
    const others = merged ? merged.get(at) : NONE;
    if (!others) continue; // a later record of a socket already written
    const age = keep(owned, at);
    if (age === false) continue;
    const owners = [owned.ownerJson(at)];
    for (const other of others) {
      const owner = owned.ownerJson(other);
      if (!owners.includes(owner)) owners.push(owner); // the same (pid, fd) twice: one owner
    }
    slice.push(owned.json(at, `[${owners.join(',')}]`, age));
    if (slice.length === SLICE) yield* flush();
  }
  for (const buf of raw.orphans) {
    const orphans = new SockDecoder(buf);
    for (let at = 0; at + SOCK_SIZE <= buf.length; at += SOCK_SIZE) {
      const cookie = orphans.cookieNumber(at);
      if (!Number.isNaN(cookie) && raw.ownedCookies.has(cookie)) continue;
      const age = keep(orphans, at);
      if (age === false) continue;
      slice.push(orphans.json(at, '[]', age));
      if (slice.length === SLICE) yield* flush();
    }
  }
  yield* flush();
  yield '],"lost":0}\n';
}

const NONE: readonly number[] = [];

/**
 * Each socket of iter/task_file's records once: the offset of its first record
 * and those of its other records (the same socket held by more (pid, fd)s).
 */
function ownedSockets(decoder: SockDecoder, length: number): Map<number, readonly number[]> {
  const byCookie = new Map<number | string, number[]>();
  const sockets = new Map<number, number[]>();
  for (let at = 0; at + SOCK_SIZE <= length; at += SOCK_SIZE) {
    const n = decoder.cookieNumber(at);
    const key = Number.isNaN(n) ? decoder.cookie(at) : n;
    const others = byCookie.get(key);
    if (others) others.push(at);
    else {
      const mine: number[] = [];
      byCookie.set(key, mine);
      sockets.set(at, mine);
    }
  }
  return sockets;
}
