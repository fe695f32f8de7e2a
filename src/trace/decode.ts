/**
 * The one reader of struct sl_event (bpf/trace.bpf.c), by the generated layout:
 * the ring buffer's batches (trace) and the leak map's records (collectLeaks(),
 * which the leak engine reads a few fields of per record).
 */
import { formatEndpoint } from '../address';
import { cString } from '../c-string';
import { cookieKeyAt, type CookieKey } from '../cookie-map';
import type { EventContext, TraceEvent } from '../events';
import { EVENT, EVENT_FLAGS, EVENT_SIZE, EVENT_TYPE, FAMILY } from '../generated/layout';
import { tcpStateName } from '../tcp-states';

const AF_INET = FAMILY.INET;

function contextOf(flags: number): EventContext {
  if (flags & EVENT_FLAGS.SOFTIRQ) return 'softirq';
  if (flags & EVENT_FLAGS.KERNEL_THREAD) return 'kthread';
  return 'task';
}

/** The command name of the task the record at `at` names. */
export function eventComm(buf: Buffer, at: number): string {
  return cString(buf, at + EVENT.comm.offset, EVENT.comm.size);
}

export function eventPid(buf: Buffer, at: number): number {
  return buf.readUInt32LE(at + EVENT.pid.offset);
}

export function eventTid(buf: Buffer, at: number): number {
  return buf.readUInt32LE(at + EVENT.tid.offset);
}

/** The creator's stack id in the kernel's `user_stacks` map, or -1 (none). */
export function eventUserStackId(buf: Buffer, at: number): number {
  return buf.readUInt16LE(at + EVENT.user_stack.offset) - 1;
}

/** The cookie of the record at `at`, as a key. */
export function eventCookieKey(buf: Buffer, at: number): CookieKey {
  return cookieKeyAt(buf, at + EVENT.cookie.offset);
}

/** Kernel monotonic ns; in the leak map, when the socket entered CLOSE_WAIT (0: unknown). */
export function eventTsNs(buf: Buffer, at: number): number {
  return Number(buf.readBigUInt64LE(at + EVENT.ts_ns.offset));
}

/** Leak map: whether the record names the socket's creator (pid, tid, comm). */
export function eventHasCreator(buf: Buffer, at: number): boolean {
  return (buf.readUInt8(at + EVENT.flags.offset) & EVENT_FLAGS.CREATOR) !== 0;
}

/** Leak map, with a creator: the creator's cgroup v2 id at creation (the cgroup directory's inode); 0 when unknown. */
export function eventCgroupId(buf: Buffer, at: number): number {
  return Number(buf.readBigUInt64LE(at + EVENT.cgroup_id.offset));
}

/** Leak map: whether the entry time was estimated (a socket in CLOSE_WAIT before sockleak started). */
export function eventAgeEstimated(buf: Buffer, at: number): boolean {
  return (buf.readUInt8(at + EVENT.flags.offset) & EVENT_FLAGS.AGE_ESTIMATED) !== 0;
}

/** Calls `visit` with the offset of each whole record in `buf`, in order. */
export function forEachEvent(buf: Buffer, visit: (at: number) => void): void {
  for (let at = 0; at + EVENT_SIZE <= buf.length; at += EVENT_SIZE) visit(at);
}

/** How many whole records `buf` holds. */
export function eventCount(buf: Buffer): number {
  return Math.floor(buf.length / EVENT_SIZE);
}

/** Decodes one struct sl_event at `offset`; undefined for an unknown type. */
export function decodeEvent(buf: Buffer, offset: number): TraceEvent | undefined {
  const family = buf.readUInt16LE(offset + EVENT.family.offset) === AF_INET ? 4 : 6;
  const base = {
    cookie: buf.readBigUInt64LE(offset + EVENT.cookie.offset).toString(),
    family,
    local: formatEndpoint(
      family,
      buf.subarray(offset + EVENT.saddr.offset, offset + EVENT.saddr.offset + EVENT.saddr.size),
      buf.readUInt16LE(offset + EVENT.sport.offset),
    ),
    remote: formatEndpoint(
      family,
      buf.subarray(offset + EVENT.daddr.offset, offset + EVENT.daddr.offset + EVENT.daddr.size),
      buf.readUInt16LE(offset + EVENT.dport.offset),
    ),
    netns: buf.readUInt32LE(offset + EVENT.netns_ino.offset),
    pid: eventPid(buf, offset),
    tid: eventTid(buf, offset),
    comm: eventComm(buf, offset),
    tsNs: eventTsNs(buf, offset),
  } as const;
  const newState = tcpStateName(buf.readUInt8(offset + EVENT.new_state.offset));
  const fd = buf.readInt32LE(offset + EVENT.fd.offset);
  const ret = buf.readInt32LE(offset + EVENT.ret.offset);
  switch (buf.readUInt8(offset + EVENT.type.offset)) {
    case EVENT_TYPE.STATE:
      return {
        type: 'state',
        ...base,
        oldState: tcpStateName(buf.readUInt8(offset + EVENT.old_state.offset)),
        newState,
        context: contextOf(buf.readUInt8(offset + EVENT.flags.offset)),
      };
    case EVENT_TYPE.CLOSE:
      return { type: 'close', ...base, fd, ret, state: newState };
    case EVENT_TYPE.CONNECT:
      return { type: 'connect', ...base, fd, ret, state: newState };
    case EVENT_TYPE.ACCEPT:
      return { type: 'accept', ...base, fd, ret, state: newState };
    case EVENT_TYPE.BIND:
      return { type: 'bind', ...base, fd, ret, state: newState };
    default:
      return undefined;
  }
}

/** Decodes a batch of whole records as delivered by the addon. */
export function decodeBatch(buf: Buffer): TraceEvent[] {
  const events: TraceEvent[] = [];
  for (let offset = 0; offset + EVENT_SIZE <= buf.length; offset += EVENT_SIZE) {
    const ev = decodeEvent(buf, offset);
    if (ev) events.push(ev);
  }
  return events;
}
