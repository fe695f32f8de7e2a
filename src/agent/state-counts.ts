/**
 * TCP sockets per (state, network namespace), counted straight from the
 * iter/tcp records (bpf/scan.bpf.c) without decoding them into SocketInfo
 * objects: the agent runs this every interval, and a full decode would churn
 * short-lived objects for every socket where counting reads two fields per
 * 112-byte record.
 */
import type { NativeScanner } from '../kernel/addon';
import { SOCK_SIZE } from '../generated/layout';
import { sockNetns, sockStateNumber } from '../scan/sock-decoder';
import { openNativeScanner, scanEachNetnsChunks } from '../scan/native-scan';
import { tcpStateName, tcpStateNumber, type TcpState } from '../tcp-states';

/** Each kernel state byte to the number of its name (unknown ones all to 0, as they share the name UNKNOWN). */
const CANONICAL_STATE = Array.from({ length: 256 }, (_, n) => tcpStateNumber(tcpStateName(n)) ?? 0);

/** Sockets in one state in one network namespace. */
export interface StateCount {
  netns: number;
  state: TcpState;
  count: number;
}

/** A loaded iterator for repeated counts; close() when done. */
export class StateCounter {
  private readonly native: NativeScanner;

  constructor(options: { btfPath?: string } = {}) {
    this.native = openNativeScanner(options);
  }

  /** Every TCP socket (TIME_WAIT and request sockets included) of every netns that has a process. */
  async count(): Promise<StateCount[]> {
    const counts = new Map<number, StateCount>(); // netns inode * 256 + kernel state number: no string per socket
    for await (const { buf } of scanEachNetnsChunks(this.native, { kind: 'tcp', stateMask: 0 })) {
      for (let at = 0; at + SOCK_SIZE <= buf.length; at += SOCK_SIZE) {
        const netns = sockNetns(buf, at);
        const stateNumber = CANONICAL_STATE[sockStateNumber(buf, at)]!;
        const key = netns * 256 + stateNumber;
        const c = counts.get(key);
        if (c) c.count++;
        else counts.set(key, { netns, state: tcpStateName(stateNumber), count: 1 });
      }
    }
    return [...counts.values()];
  }

  close(): void {
    this.native.close();
  }
}
