/**
 * The socket table as port counting needs it (port-usage.ts): every TCP socket
 * of every netns that has a process, from iter/tcp alone (it sees held sockets
 * too), with the fields the count reads. A full SocketScanner.scan() makes
 * objects per socket and runs iter/task_file as well; this keeps ~20 bytes a
 * socket in typed-array columns, addresses as ids into strings shared for the
 * scan, and reads the records a chunk at a time, so the agent's once-a-minute
 * count of a machine with 200k sockets makes a tenth of the short-lived memory
 * (docs/benchmarks.md, "Figures behind design choices").
 */
import { formatIPv4, formatIPv6, joinHostPort } from '../address';
import type { NativeScanner } from '../kernel/addon';
import { SOCK_SIZE } from '../generated/layout';
import { openNativeScanner, scanEachNetnsChunks } from '../scan/native-scan';
import { sockAddress, sockFamily, sockLocalPort, sockRemotePort, sockStateNumber, sockTimerMs, timeWaitAgeMs } from '../scan/sock-decoder';
import type { PortSocket } from './port-usage';
import { tcpStateName, tcpStateNumber, type TcpState } from '../tcp-states';

const TIME_WAIT = tcpStateNumber('TIME_WAIT');

/** Strings of one scan by id; IPv4 ones found by number, so repeats make no string. */
class StringIds {
  readonly list: string[] = [];
  private readonly ids = new Map<number | string, number>();

  id(key: number | string, make: () => string): number {
    let id = this.ids.get(key);
    if (id === undefined) {
      id = this.list.length;
      this.list.push(make());
      this.ids.set(key, id);
    }
    return id;
  }
}

/** The socket at one index of a PortSockets; the view moves on as the iteration does. */
class SocketView implements PortSocket {
  i = 0;
  constructor(private readonly of: PortSockets) {}
  get netns(): number {
    return this.of.netns;
  }
  get state(): TcpState {
    return tcpStateName(this.of.stateAt(this.i));
  }
  get remote(): string {
    return this.of.remoteAt(this.i);
  }
  get stateAgeMs(): number | null {
    return this.of.ageAt(this.i);
  }
  get localHost(): string {
    return this.of.localHostAt(this.i);
  }
  get localPort(): number {
    return this.of.localPortAt(this.i);
  }
  get local(): string {
    return joinHostPort(this.of.v6At(this.i) ? 6 : 4, this.localHost, this.localPort);
  }
}

function grow<T extends Uint8Array | Uint16Array | Uint32Array | Float64Array>(a: T): T {
  const b = new (a.constructor as new (n: number) => T)(a.length * 2);
  b.set(a);
  return b;
}

/**
 * One network namespace's sockets from a port scan, in columns. Iterating
 * yields one reused view object: read what you need of a socket before the
 * next step (port-usage.ts does); sockets() copies them out.
 */
export class PortSockets implements Iterable<PortSocket> {
  private n = 0;
  private state = new Uint8Array(256);
  private v6 = new Uint8Array(256);
  private localPort = new Uint16Array(256);
  private localHost = new Uint32Array(256);
  private remote = new Uint32Array(256);
  private age = new Float64Array(256); // NaN: none (only TIME_WAIT has one)

  constructor(
    readonly netns: number,
    private readonly hosts: StringIds,
    private readonly peers: StringIds,
  ) {}

  get length(): number {
    return this.n;
  }

  /** Appends the sl_sock record at `at`. */
  add(buf: Buffer, at: number): void {
    if (this.n === this.state.length) {
      this.state = grow(this.state);
      this.v6 = grow(this.v6);
      this.localPort = grow(this.localPort);
      this.localHost = grow(this.localHost);
      this.remote = grow(this.remote);
      this.age = grow(this.age);
    }
    const i = this.n++;
    const family = sockFamily(buf, at);
    const state = sockStateNumber(buf, at);
    const saddr = sockAddress(buf, at, 'local');
    const daddr = sockAddress(buf, at, 'remote');
    const dport = sockRemotePort(buf, at);
    if (family === 4) {
      this.localHost[i] = this.hosts.id(saddr.readUInt32LE(0), () => formatIPv4(saddr));
      this.remote[i] = this.peers.id(daddr.readUInt32LE(0) * 65536 + dport, () => joinHostPort(4, formatIPv4(daddr), dport));
    } else {
      const host = formatIPv6(saddr);
      this.localHost[i] = this.hosts.id(host, () => host);
      const peer = joinHostPort(6, formatIPv6(daddr), dport);
      this.remote[i] = this.peers.id(peer, () => peer);
    }
    this.state[i] = state;
    this.v6[i] = family === 6 ? 1 : 0;
    this.localPort[i] = sockLocalPort(buf, at);
    // The age port counting reads: a TIME_WAIT's, from its timer (as SocketScanner decodes it).
    const timerMs = state === TIME_WAIT ? sockTimerMs(buf, at) : null;
    this.age[i] = timerMs !== null ? timeWaitAgeMs(timerMs) : NaN;
  }

  stateAt(i: number): number {
    return this.state[i]!;
  }
  v6At(i: number): boolean {
    return this.v6[i] === 1;
  }
  localPortAt(i: number): number {
    return this.localPort[i]!;
  }
  localHostAt(i: number): string {
    return this.hosts.list[this.localHost[i]!]!;
  }
  remoteAt(i: number): string {
    return this.peers.list[this.remote[i]!]!;
  }
  ageAt(i: number): number | null {
    const a = this.age[i]!;
    return Number.isNaN(a) ? null : a;
  }

  *[Symbol.iterator](): Iterator<PortSocket> {
    const view = new SocketView(this);
    for (let i = 0; i < this.n; i++) {
      view.i = i;
      yield view;
    }
  }

  /** The sockets as plain objects (tests, small tables). */
  sockets(): PortSocket[] {
    const out: PortSocket[] = [];
    for (const s of this) out.push({ netns: s.netns, state: s.state, local: s.local, remote: s.remote, stateAgeMs: s.stateAgeMs, localHost: s.localHost!, localPort: s.localPort! });
    return out;
  }
}

/** A loaded iter/tcp for repeated port counts; close() when done. */
export class PortSocketScanner {
  private readonly native: NativeScanner;

  constructor(options: { btfPath?: string } = {}) {
    this.native = openNativeScanner(options);
  }

  /** Every TCP socket (TIME_WAIT, LISTEN and request sockets included) of every netns that has a process, by netns inode. */
  async scan(): Promise<Map<number, PortSockets>> {
    const byNetns = new Map<number, PortSockets>();
    const hosts = new StringIds();
    const peers = new StringIds();
    for await (const { netns, buf } of scanEachNetnsChunks(this.native, { kind: 'tcp', stateMask: 0 })) {
      let sockets = byNetns.get(netns);
      if (!sockets) byNetns.set(netns, (sockets = new PortSockets(netns, hosts, peers)));
      for (let at = 0; at + SOCK_SIZE <= buf.length; at += SOCK_SIZE) sockets.add(buf, at);
    }
    return byNetns;
  }

  close(): void {
    this.native.close();
  }
}
