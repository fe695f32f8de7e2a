/**
 * Decoding of the kernel's active_closes map (bpf/ports.bpf.h): cumulative
 * counts of connections each process closed first, per destination — every one
 * leaves a TIME_WAIT socket on that process's side.
 */
import { formatEndpoint } from '../address';
import { cString } from '../c-string';
import { CLOSE_COUNT, CLOSE_COUNT_SIZE, CLOSE_KEY, CLOSE_KEY_SIZE, FAMILY } from '../generated/layout';

const AF_INET = FAMILY.INET;
const PAIR_SIZE = CLOSE_KEY_SIZE + CLOSE_COUNT_SIZE;

/** One (process, netns, destination) entry: active closes since the tracer loaded. */
export interface ActiveCloseCount {
  netns: number;
  pid: number;
  /** Command name when the process first closed to this destination. */
  comm: string;
  remote: string;
  /** Cumulative; never reset. Rates come from differences between reads. */
  count: number;
}

/** Decodes Tracer.activeCloses(): (struct sl_close_key, struct sl_close_count) pairs. */
export function decodeActiveCloses(buf: Buffer): ActiveCloseCount[] {
  const entries: ActiveCloseCount[] = [];
  for (let at = 0; at + PAIR_SIZE <= buf.length; at += PAIR_SIZE) {
    const family = buf.readUInt16LE(at + CLOSE_KEY.family.offset) === AF_INET ? 4 : 6;
    const value = at + CLOSE_KEY_SIZE;
    entries.push({
      netns: buf.readUInt32LE(at + CLOSE_KEY.netns_ino.offset),
      pid: buf.readUInt32LE(at + CLOSE_KEY.pid.offset),
      comm: cString(buf, value + CLOSE_COUNT.comm.offset, CLOSE_COUNT.comm.size),
      remote: formatEndpoint(
        family,
        buf.subarray(at + CLOSE_KEY.daddr.offset, at + CLOSE_KEY.daddr.offset + CLOSE_KEY.daddr.size),
        buf.readUInt16LE(at + CLOSE_KEY.dport.offset),
      ),
      count: Number(buf.readBigUInt64LE(value + CLOSE_COUNT.count.offset)),
    });
  }
  return entries;
}
