/**
 * The socket table as port counting needs it (port-usage.ts): every TCP socket
 * of every netns that has a process, from iter/tcp alone (it sees held sockets
 * too), with the five fields the count reads. A full SocketScanner.scan() makes
 * ~0.7 KB of objects per socket and runs iter/task_file as well; this makes
 * ~0.1 KB and shares peer strings, so the once-a-minute count of a machine with
 * 200k sockets costs ~20 MB of short-lived heap instead of ~150 MB.
 */
import { readlinkSync } from 'node:fs';
import { formatEndpoint } from './address';
import { loadAddon, type NativeScanner } from './addon';
import { KernelUnsupportedError } from './errors';
import { SOCK, SOCK_FLAGS, SOCK_SIZE } from './generated/layout';
import { TIME_WAIT_MS, type PortSocket } from './port-usage';
import { explainNativeError, requireBpfPrivileges, requireBtf } from './preflight';
import { networkNamespaces } from './scan';
import { tcpStateName } from './tcp-states';

const AF_INET = 2;
/** Peers kept for sharing within one scan before starting over. */
const PEER_LIMIT = 4096;

/** A loaded iter/tcp for repeated port counts; close() when done. */
export class PortSocketScanner {
  private readonly native: NativeScanner;

  constructor(options: { btfPath?: string } = {}) {
    requireBpfPrivileges();
    const btfPath = requireBtf(options.btfPath);
    try {
      this.native = new (loadAddon().Scanner)(btfPath !== undefined ? { btfPath } : {});
    } catch (err) {
      throw explainNativeError(err);
    }
  }

  /** Every TCP socket (TIME_WAIT, LISTEN and request sockets included) of every netns that has a process. */
  async scan(): Promise<PortSocket[]> {
    const sockets: PortSocket[] = [];
    const peers = new Map<string, string>();
    const own = /\[(\d+)\]/.exec(readlinkSync('/proc/self/ns/net'))?.[1];
    for (const [ino, path] of networkNamespaces()) {
      let buf: Buffer;
      try {
        // Our own namespace needs no setns() (which wants CAP_SYS_ADMIN).
        buf = await this.native.scan({ kind: 'tcp', stateMask: 0, ...(String(ino) !== own && { netnsPath: path }) });
      } catch (err) {
        const e = explainNativeError(err);
        if (e instanceof KernelUnsupportedError && /netns/.test(e.message)) continue; // its last process exited
        throw e;
      }
      for (let at = 0; at + SOCK_SIZE <= buf.length; at += SOCK_SIZE) {
        const family = buf.readUInt16LE(at + SOCK.family.offset) === AF_INET ? 4 : 6;
        const state = tcpStateName(buf.readUInt8(at + SOCK.state.offset));
        let remote = formatEndpoint(family, buf.subarray(at + SOCK.daddr.offset, at + SOCK.daddr.offset + 16), buf.readUInt16LE(at + SOCK.dport.offset));
        const shared = peers.get(remote);
        if (shared !== undefined) remote = shared;
        else {
          if (peers.size >= PEER_LIMIT) peers.clear();
          peers.set(remote, remote);
        }
        const timed = (buf.readUInt8(at + SOCK.flags.offset) & SOCK_FLAGS.TIMER) !== 0;
        sockets.push({
          netns: buf.readUInt32LE(at + SOCK.netns_ino.offset),
          state,
          local: formatEndpoint(family, buf.subarray(at + SOCK.saddr.offset, at + SOCK.saddr.offset + 16), buf.readUInt16LE(at + SOCK.sport.offset)),
          remote,
          // The age port counting reads: a TIME_WAIT's, from its timer (as SocketScanner decodes it).
          stateAgeMs: state === 'TIME_WAIT' && timed ? Math.max(0, TIME_WAIT_MS - buf.readUInt32LE(at + SOCK.timer_ms.offset)) : null,
        });
      }
    }
    return sockets;
  }

  close(): void {
    this.native.close();
  }
}
