/**
 * `snapshot --json` written straight from a scan's records: the document
 * JSON.stringify(snapshot()) would give, without a SocketInfo per socket first.
 * At 10k sockets, making those objects, stringifying them and collecting them
 * again took most of a one-shot snapshot's time after start-up. SockDecoder
 * renders a record both ways from the same field readers.
 */
import { SOCK_SIZE } from '../generated/layout';
import { encoded, JsonBytes } from '../json-bytes';
import type { RawScan } from './scan';
import { filtersCgroup, type CgroupFilter } from '../cgroup-path';
import { scanCgroups } from './cgroups';
import { SockDecoder } from './sock-decoder';

const END = encoded('],"lost":0}\n');
const COMMA = encoded(',');

/**
 * The JSON document of a snapshot (and a newline), a chunk at a time: the same
 * sockets in the same order as SocketScanner.scan() gives them (owned ones by
 * their first record, then orphans), owners merged, `olderThanMs` and the
 * cgroup filter applied (a socket is kept when one holder is in it; orphans have none).
 */
export function* snapshotJson(raw: RawScan, takenAt: string, olderThanMs?: number, filter: CgroupFilter = {}): Generator<Buffer> {
  const out = new JsonBytes();
  out.bytes(encoded(`{"takenAt":${JSON.stringify(takenAt)},"sockets":[`));
  let first = true;
  const keep = (decoder: SockDecoder, at: number): number | null | false => {
    const age = decoder.stateAgeMs(at);
    return olderThanMs === undefined || (age !== null && age >= olderThanMs) ? age : false;
  };
  const append = (decoder: SockDecoder, at: number, owners: readonly number[], age: number | null): void => {
    if (!first) out.bytes(COMMA);
    first = false;
    decoder.writeJson(out, at, owners, age);
  };

  const cgroups = scanCgroups(raw);
  const filtered = filtersCgroup(filter);
  const owned = new SockDecoder(raw.owned, cgroups);
  const records = raw.owned.length / SOCK_SIZE;
  // Usually every record is a socket of its own: nothing to merge.
  const merged = raw.ownedCookies.size < records ? ownedSockets(owned, raw.owned.length) : undefined;
  const alone = [0];
  for (let at = 0; at + SOCK_SIZE <= raw.owned.length; at += SOCK_SIZE) {
    const holders = merged ? merged.get(at) : ((alone[0] = at), alone);
    if (!holders) continue; // a later record of a socket already written
    if (filtered && !holders.some((h) => owned.holderIn(h, filter))) continue;
    const age = keep(owned, at);
    if (age === false) continue;
    append(owned, at, holders, age);
    if (out.full()) yield out.take()!;
  }
  for (const buf of filtered ? [] : raw.orphans) {
    const orphans = new SockDecoder(buf, cgroups);
    for (let at = 0; at + SOCK_SIZE <= buf.length; at += SOCK_SIZE) {
      const cookie = orphans.cookieNumber(at);
      if (!Number.isNaN(cookie) && raw.ownedCookies.has(cookie)) continue;
      const age = keep(orphans, at);
      if (age === false) continue;
      append(orphans, at, NONE, age);
      if (out.full()) yield out.take()!;
    }
  }
  out.bytes(END);
  yield out.take()!;
}

const NONE: readonly number[] = [];

/**
 * Each socket of iter/task_file's records once: the offset of its first record,
 * and the offsets of all its records (the same socket held by more (pid, fd)s).
 */
function ownedSockets(decoder: SockDecoder, length: number): Map<number, readonly number[]> {
  const byCookie = new Map<number | string, number[]>();
  const sockets = new Map<number, number[]>();
  for (let at = 0; at + SOCK_SIZE <= length; at += SOCK_SIZE) {
    const n = decoder.cookieNumber(at);
    const key = Number.isNaN(n) ? decoder.cookie(at) : n;
    const holders = byCookie.get(key);
    if (holders) holders.push(at);
    else {
      const mine = [at];
      byCookie.set(key, mine);
      sockets.set(at, mine);
    }
  }
  return sockets;
}
