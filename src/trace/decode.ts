/** Decoding of ring-buffer batches into typed events, by the generated layout. */
import { formatEndpoint } from '../address';
import type { EventContext, TraceEvent } from '../events';
import { EVENT, EVENT_FLAGS, EVENT_SIZE, EVENT_TYPE, FAMILY } from '../generated/layout';
import { tcpStateName } from '../tcp-states';

const AF_INET = FAMILY.INET;

function contextOf(flags: number): EventContext {
  if (flags & EVENT_FLAGS.SOFTIRQ) return 'softirq';
  if (flags & EVENT_FLAGS.KERNEL_THREAD) return 'kthread';
  return 'task';
}

function comm(buf: Buffer, offset: number): string {
  const bytes = buf.subarray(offset, offset + EVENT.comm.size);
  const nul = bytes.indexOf(0);
  return bytes.toString('latin1', 0, nul < 0 ? bytes.length : nul);
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
    pid: buf.readUInt32LE(offset + EVENT.pid.offset),
    tid: buf.readUInt32LE(offset + EVENT.tid.offset),
    comm: comm(buf, offset + EVENT.comm.offset),
    tsNs: Number(buf.readBigUInt64LE(offset + EVENT.ts_ns.offset)),
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
