/**
 * One reported leak as the leak engine (leak-watcher.ts) keeps it between
 * records: what its records need and no more, strings shared with other leaks,
 * a lone owner held without an array. 200k of these are the first incident.
 */
import { cookieText, type CookieKey, type SocketDetails } from './close-wait-scan';
import type { LeakRecord } from './leak-watcher';
import type { Creator, Owner } from './sockets';

function isOwnerList(h: Owner | readonly Owner[]): h is readonly Owner[] {
  return Array.isArray(h);
}

/** A reported leak as the engine keeps it: what its records need, strings shared with other leaks. */
export class TrackedLeak {
  readonly local: string;
  readonly remote: string;
  /** The netns inode as an int32, so that V8 stores it inline (an inode above 2^31 would be a boxed number). */
  private readonly netnsBits: number;
  readonly uid: number;
  readonly recvQ: number;
  readonly sendQ: number;
  /** family 6, keepalive, age estimated: one small integer for three fields. */
  private readonly bits: number;
  readonly keepaliveProbeInMs: number | null;
  readonly keepaliveReapByMs: number | null;
  /** The rescan that last saw it, and how many of `owners` that rescan has confirmed so far (-1: they changed). */
  scanMark = 0;
  scanConfirmed = 0;
  /** No owner, the one owner (most leaks: no array), or several. Arrays are replaced, never changed in place. */
  private holders: Owner | readonly Owner[] | null = null;

  constructor(
    readonly cookie: CookieKey,
    d: SocketDetails,
    owners: readonly Owner[],
    readonly creator: Creator | null,
    ageEstimated: boolean,
    /** CLOCK_MONOTONIC ns it entered CLOSE_WAIT (estimated for pre-existing ones). */
    readonly enteredNs: number,
  ) {
    this.owners = owners;
    this.bits = (d.family === 6 ? 1 : 0) | (d.keepalive ? 2 : 0) | (ageEstimated ? 4 : 0);
    this.local = d.local;
    this.remote = d.remote;
    this.netnsBits = d.netns | 0;
    this.uid = d.uid;
    this.recvQ = d.recvQ;
    this.sendQ = d.sendQ;
    this.keepaliveProbeInMs = d.keepaliveProbeInMs;
    this.keepaliveReapByMs = d.keepaliveReapByMs;
  }

  get owners(): readonly Owner[] {
    const h = this.holders;
    return h === null ? [] : isOwnerList(h) ? h : [h];
  }

  set owners(owners: readonly Owner[]) {
    this.holders = owners.length === 0 ? null : owners.length === 1 ? owners[0]! : owners;
  }

  get ownerCount(): number {
    const h = this.holders;
    return h === null ? 0 : isOwnerList(h) ? h.length : 1;
  }

  ownerAt(i: number): Owner | undefined {
    const h = this.holders;
    return h === null ? undefined : isOwnerList(h) ? h[i] : i === 0 ? h : undefined;
  }

  /** The full record, `stateAgeMs` old (fields in SocketInfo's order, as JSON prints them). */
  record(stateAgeMs: number): LeakRecord {
    return {
      type: 'leak',
      cookie: cookieText(this.cookie),
      state: 'CLOSE_WAIT',
      family: this.bits & 1 ? 6 : 4,
      local: this.local,
      remote: this.remote,
      netns: this.netnsBits >>> 0,
      owners: [...this.owners],
      creator: this.creator,
      recvQ: this.recvQ,
      sendQ: this.sendQ,
      keepalive: (this.bits & 2) !== 0,
      keepaliveProbeInMs: this.keepaliveProbeInMs,
      keepaliveReapByMs: this.keepaliveReapByMs,
      stateAgeMs,
      ageEstimated: (this.bits & 4) !== 0,
      uid: this.uid,
    };
  }
}
