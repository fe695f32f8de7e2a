/**
 * The leak engine's reconciliation of the kernel's word with the iterators'
 * (leak-watcher.ts calls it once a step): the leak map says which sockets
 * crossed the threshold (struct sl_event records, read through trace/decode.ts);
 * one pass of the CLOSE_WAIT iterators (close-wait-scan.ts) says what they are
 * and who holds them. New leaks become tentative slots of the LeakTable, stale
 * ones (a close() they survived) get their holders now, and on a rescan every
 * tracked leak's holders are checked in place.
 */
import { CookieMap, type CookieKey, type CookieSet } from '../cookie-map';
import { ownerOf, type CloseWaitScanner, type RawSock } from '../scan/close-wait-scan';
import { CGROUP_GONE, CgroupNames } from '../scan/cgroups';
import { sameOwner, type Creator, type Owner } from '../sockets';
import type { ResolvedStack } from '../stacks/symbolizer';
import { eventAgeEstimated, eventCgroupId, eventComm, eventCookieKey, eventCount, eventHasCreator, eventPid, eventTid, eventTsNs, eventUserStackId, forEachEvent } from '../trace/decode';
import type { LeakTable } from './leak-table';

/** scanConfirmed of a leak the pass itself found new: a rescan of the same pass leaves it alone. */
const NEW_IN_SCAN = -2;

/** Distinct creators kept for sharing before starting over (live leaks keep theirs). */
const CREATOR_LIMIT = 4096;

/** A union of cookie sets, as one (no copy). */
function union(...sets: CookieSet[]): CookieSet {
  return {
    has: (cookie) => sets.some((s) => s.has(cookie)),
    size: sets.reduce((n, s) => n + s.size, 0),
    *keys() {
      for (const s of sets) yield* s.keys();
    },
  };
}

/**
 * `owners` and `owner`, in an array of exactly that size (a pushed-to or spread
 * array keeps ~16 spare slots: 128 bytes a leak); `owners` itself when it has
 * that holder already.
 */
function withOwner(owners: readonly Owner[], owner: Owner): readonly Owner[] {
  if (owners.some((o) => sameOwner(o, owner))) return owners;
  return owners.length === 0 ? [owner] : owners.concat([owner]);
}

/** Reconciles one engine's LeakTable with the iterators, pass by pass. */
export class LeakReconciler {
  private scans = 0;
  /** A rescan's new owner lists, by slot, for the leaks whose owners changed. */
  private readonly owned = new Map<number, readonly Owner[]>();
  private readonly creators = new Map<string, Creator>();
  /** Creators' cgroups by id: ids stay valid for the life of their cgroup, so this lives as long as the engine. */
  private readonly cgroupsById = new CgroupNames();

  /**
   * `stackOf` names a creator's stack (the kernel's user_stacks id) while its
   * process lives: called once per distinct creator and stack.
   */
  constructor(
    private readonly leaks: LeakTable,
    private readonly scanner: CloseWaitScanner,
    private readonly stackOf?: (pid: number, stackId: number) => ResolvedStack | null,
  ) {}

  /** The leaks in `raw` (the leak map's sl_events) not open yet: where each one's record is, by cookie. */
  newLeaks(raw: Buffer): CookieMap {
    const fresh = new CookieMap(eventCount(raw));
    forEachEvent(raw, (at) => {
      const cookie = eventCookieKey(raw, at);
      if (this.leaks.slotOf(cookie) < 0) fresh.set(cookie, at); // (a cookie already open is not new)
    });
    return fresh;
  }

  /** Calls `visit` with each cookie of `fresh` once, in the kernel's order (`raw`'s). */
  eachNew(raw: Buffer, fresh: CookieMap, visit: (cookie: CookieKey) => void): void {
    forEachEvent(raw, (at) => {
      const cookie = eventCookieKey(raw, at);
      if (fresh.get(cookie) === at) visit(cookie); // else open already, or a repeat
    });
  }

  /**
   * One pass over the CLOSE_WAIT sockets: the new leaks (`fresh`, their events
   * in `raw`) go straight into tentative slots of the table, details and
   * owners (marked NEW_IN_SCAN); the `stale` ones get their owners, returned
   * (absent: not found, gone); on a rescan every tracked leak's owners are
   * checked in place (marked on its slot; only changed lists are made anew),
   * so a rescan of 200k unchanged leaks makes no objects. settle() ends it.
   */
  async pass(
    raw: Buffer,
    fresh: CookieMap,
    stale: CookieSet,
    rescan: boolean,
    nowNs: number,
    pids: readonly number[] | undefined,
  ): Promise<Map<CookieKey, readonly Owner[]>> {
    const t = this.leaks;
    const staleOwners = new Map<CookieKey, readonly Owner[]>();
    const strings = this.scanner.strings;
    const scan = ++this.scans;
    let seen = 0;
    const wanted = rescan ? union(fresh, t) : union(fresh, stale); // stale ones are tracked leaks
    const addOwner = (leak: number, sock: RawSock): void => {
      const owner = ownerOf(sock, strings, this.scanner.cgroups);
      if (!owner) return;
      const owners = t.owners(leak);
      const more = withOwner(owners, owner);
      if (more !== owners) t.setOwners(leak, more);
    };
    const visit = (cookie: CookieKey, sock: RawSock): void => {
      const leak = t.slotOf(cookie);
      if (leak >= 0 && t.isTentative(leak)) {
        if (sock.held) addOwner(leak, sock); // else iter/tcp's copy of a held socket
        return;
      }
      const at = fresh.get(cookie);
      if (at >= 0) {
        const creator = eventHasCreator(raw, at) ? this.creatorAt(raw, at) : null;
        const estimated = eventAgeEstimated(raw, at);
        const tsNs = eventTsNs(raw, at);
        const added = t.add(cookie, sock, creator, estimated, estimated && tsNs === 0 ? nowNs : tsNs);
        t.scanMark[added] = scan;
        t.scanConfirmed[added] = NEW_IN_SCAN;
        seen++;
        addOwner(added, sock);
        return;
      }
      if (leak < 0) return;
      if (stale.has(cookie)) {
        let owners = staleOwners.get(cookie);
        if (!owners) {
          staleOwners.set(cookie, (owners = []));
          seen++;
        } else if (!sock.held) return;
        const owner = ownerOf(sock, strings, this.scanner.cgroups);
        if (owner) staleOwners.set(cookie, withOwner(owners, owner));
        return;
      }
      if (!rescan) return;
      if (t.scanMark[leak] !== scan) {
        t.scanMark[leak] = scan;
        t.scanConfirmed[leak] = 0;
        seen++;
      }
      const confirmed = t.scanConfirmed[leak]!;
      if (sock.held && confirmed >= 0 && t.namesOwnerAt(leak, confirmed, sock)) {
        t.scanConfirmed[leak] = confirmed + 1;
        return;
      }
      const owner = ownerOf(sock, strings, this.scanner.cgroups);
      if (!owner) return;
      const owners = this.owned.get(leak) ?? t.owners(leak).slice(0, Math.max(0, confirmed));
      t.scanConfirmed[leak] = -1; // from here on its list is `owned`'s
      this.owned.set(leak, withOwner(owners, owner));
    };
    await this.scanner.pass(wanted, visit, () => seen < wanted.size, pids);
    return staleOwners;
  }

  /**
   * Ends the last pass. After a rescan: gives each open leak the pass saw its
   * holders as found, and returns the open leaks it did not see (gone), but for
   * those `unseenOk` accepts (they left CLOSE_WAIT already, or were stale).
   */
  settle(rescan: boolean, unseenOk: (cookie: CookieKey) => boolean): number[] {
    const gone: number[] = [];
    if (rescan) {
      const t = this.leaks;
      for (const leak of t.slots()) {
        if (t.scanMark[leak] === this.scans) {
          if (t.scanConfirmed[leak] === NEW_IN_SCAN) continue;
          const owners = this.owned.get(leak);
          if (owners) t.setOwners(leak, owners);
          else t.keepOwners(leak, t.scanConfirmed[leak]!);
        } else if (!unseenOk(t.cookieKey(leak))) {
          gone.push(leak);
        }
      }
    }
    this.owned.clear();
    return gone;
  }

  /** The creator an sl_event names, shared with the leaks of the same thread and cgroup. */
  private creatorAt(raw: Buffer, at: number): Creator {
    const pid = eventPid(raw, at);
    const tid = eventTid(raw, at);
    const comm = eventComm(raw, at);
    const cgroupId = eventCgroupId(raw, at);
    const stackId = this.stackOf ? eventUserStackId(raw, at) : -1;
    const key = `${pid}|${tid}|${comm}|${cgroupId}|${stackId}`;
    let creator = this.creators.get(key);
    if (!creator) {
      if (this.creators.size >= CREATOR_LIMIT) this.creators.clear();
      const place = cgroupId === 0 ? null : this.cgroupsById.ofId(cgroupId);
      creator = { pid, tid, comm: this.scanner.strings.get(comm), ...(place === 'gone' ? { cgroup: CGROUP_GONE } : place) };
      const stack = stackId >= 0 ? this.stackOf?.(pid, stackId) : null;
      if (stack) {
        creator.stack = stack.stack;
        creator.stackTruncated = stack.stackTruncated;
      }
      this.creators.set(key, creator);
    }
    return creator;
  }
}
