/**
 * The socket table as port counting needs it (port-usage.ts): every TCP socket
 * of every netns that has a process, from iter/tcp alone (it sees held sockets
 * too), with the fields the count reads. A full SocketScanner.scan() makes
 * ~0.7 KB of objects per socket and runs iter/task_file as well; this makes one
 * ~80-byte object, its strings shared (addresses, peers), so the once-a-minute
 * count of a machine with 200k sockets costs ~20 MB of short-lived heap
 * instead of ~150 MB.
 */
import { formatIPv4, formatIPv6, joinHostPort } from './address';
import type { NativeScanner } from './addon';
import { SOCK, SOCK_FLAGS, SOCK_SIZE } from './generated/layout';
import { openNativeScanner, scanEachNetnsChunks } from './native-scan';
import { TIME_WAIT_MS, type PortSocket } from './port-usage';
import { tcpStateName, type TcpState } from './tcp-states';

const AF_INET = 2;
/** Distinct addresses and peers kept for sharing within one scan before starting over. */
const SHARE_LIMIT = 4096;

/** One socket of a port scan: its local endpoint is kept apart and joined only if read. */
class ScannedSocket implements PortSocket {
  constructor(
    readonly netns: number,
    readonly state: TcpState,
    readonly remote: string,
    readonly stateAgeMs: number | null,
    readonly localHost: string,
    readonly localPort: number,
    private readonly family: 4 | 6,
  ) {}

  get local(): string {
    return joinHostPort(this.family, this.localHost, this.localPort);
  }
}

/** Strings made from raw addresses, shared while a scan runs: IPv4 ones keyed by number, so repeats make no string. */
class SharedText {
  private readonly v4 = new Map<number, string>();
  private readonly other = new Map<string, string>();

  get(key: number, make: () => string): string {
    let s = this.v4.get(key);
    if (s === undefined) {
      if (this.v4.size >= SHARE_LIMIT) this.v4.clear();
      this.v4.set(key, (s = make()));
    }
    return s;
  }

  intern(text: string): string {
    const s = this.other.get(text);
    if (s !== undefined) return s;
    if (this.other.size >= SHARE_LIMIT) this.other.clear();
    this.other.set(text, text);
    return text;
  }
}

/** A loaded iter/tcp for repeated port counts; close() when done. */
export class PortSocketScanner {
  private readonly native: NativeScanner;

  constructor(options: { btfPath?: string } = {}) {
    this.native = openNativeScanner(options);
  }

  /** Every TCP socket (TIME_WAIT, LISTEN and request sockets included) of every netns that has a process. */
  async scan(): Promise<PortSocket[]> {
    const sockets: PortSocket[] = [];
    const hosts = new SharedText();
    const peers = new SharedText();
    for await (const { buf } of scanEachNetnsChunks(this.native, { kind: 'tcp', stateMask: 0 })) {
      for (let at = 0; at + SOCK_SIZE <= buf.length; at += SOCK_SIZE) {
        const family = buf.readUInt16LE(at + SOCK.family.offset) === AF_INET ? 4 : 6;
        const state = tcpStateName(buf.readUInt8(at + SOCK.state.offset));
        const saddr = buf.subarray(at + SOCK.saddr.offset, at + SOCK.saddr.offset + 16);
        const daddr = buf.subarray(at + SOCK.daddr.offset, at + SOCK.daddr.offset + 16);
        const dport = buf.readUInt16LE(at + SOCK.dport.offset);
        let localHost: string;
        let remote: string;
        if (family === 4) {
          localHost = hosts.get(saddr.readUInt32LE(0), () => formatIPv4(saddr));
          remote = peers.get(daddr.readUInt32LE(0) * 65536 + dport, () => joinHostPort(4, formatIPv4(daddr), dport));
        } else {
          localHost = hosts.intern(formatIPv6(saddr));
          remote = peers.intern(joinHostPort(6, formatIPv6(daddr), dport));
        }
        const timed = (buf.readUInt8(at + SOCK.flags.offset) & SOCK_FLAGS.TIMER) !== 0;
        // The age port counting reads: a TIME_WAIT's, from its timer (as SocketScanner decodes it).
        const stateAgeMs = state === 'TIME_WAIT' && timed ? Math.max(0, TIME_WAIT_MS - buf.readUInt32LE(at + SOCK.timer_ms.offset)) : null;
        sockets.push(new ScannedSocket(buf.readUInt32LE(at + SOCK.netns_ino.offset), state, remote, stateAgeMs, localHost, buf.readUInt16LE(at + SOCK.sport.offset), family));
      }
    }
    return sockets;
  }

  close(): void {
    this.native.close();
  }
}
