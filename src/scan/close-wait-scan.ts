/**
 * The leak engine's iterator passes (bpf/scan.bpf.c), read straight from the
 * raw struct sl_sock records: objects are made only for the sockets asked for.
 *
 * SocketScanner.scan() decodes every socket into a SocketInfo (short-lived
 * heap for each); the engine asks for a few cookies per tick and, on a rescan,
 * only for the owners of the leaks it tracks. With 200k leaks a decode of
 * everything on every such pass is what drove the agent's RSS up
 * (docs/benchmarks.md, "Figures behind design choices").
 */
import type { NativeScanner } from '../kernel/addon';
import { NotFoundError } from '../errors';
import { type CookieKey, type CookieSet } from '../cookie-map';
import { SOCK_SIZE } from '../generated/layout';
import { openNativeScanner, scanChunks, scanEachNetnsChunks, stateMask } from './native-scan';
import { requireProcess } from '../kernel/preflight';
import { SockDecoder, sockCookieKey, sockCookieLow, sockNamesOwner, sockOwner } from './sock-decoder';
import type { Owner } from '../sockets';
import { CgroupNames } from './cgroups';

const CLOSE_WAIT_MASK = stateMask(['CLOSE_WAIT']);
/** Passes that want fewer cookies than this filter records by the cookie's low word first. */
const FILTER_BELOW = 4096;
/** Distinct strings an Interner keeps before it starts over (live leaks keep theirs). */
const INTERN_LIMIT = 4096;

/**
 * `s` as one flat string: a string built by concatenation is a tree of
 * pieces in V8, several times the size of its text, and kept strings live long.
 */
function flat(s: string): string {
  return Buffer.from(s, 'latin1').toString('latin1');
}

/**
 * Shares equal strings (comms, peers) between leaks. Bounded: past the limit it
 * forgets what it knew, so unique strings (server-side peers) cost nothing here.
 */
export class Interner {
  private readonly known = new Map<string, string>();

  get(s: string): string {
    const known = this.known.get(s);
    if (known !== undefined) return known;
    if (this.known.size >= INTERN_LIMIT) this.known.clear();
    const kept = flat(s);
    this.known.set(kept, kept);
    return kept;
  }
}

/** One struct sl_sock of a pass; valid only during the visit. */
export interface RawSock {
  buf: Buffer;
  /** Reads the record's fields (the one decoder of struct sl_sock); made once per buffer. */
  decoder: SockDecoder;
  at: number;
  /** From iter/task_file (it names a holder); false: iter/tcp, which sees every socket of one netns. */
  held: boolean;
}

/** The holder a held record names; undefined when it names none. */
export function ownerOf({ buf, at, held }: RawSock, strings: Interner, cgroups?: CgroupNames): Owner | undefined {
  const owner = held ? sockOwner(buf, at, (comm) => strings.get(comm)) : undefined;
  const place = owner && cgroups?.ofPid(owner.pid);
  return place ? { ...owner, ...place } : owner;
}

/** Whether the record names the holder (pid, fd, comm) (compared in place: no string made). */
export function namesOwner({ buf, at, held }: RawSock, pid: number, fd: number, comm: string): boolean {
  return held && sockNamesOwner(buf, at, pid, fd, comm);
}

/**
 * Low 32 bits of each cookie, to skip most records without making a string:
 * worth it when few cookies are asked for among many sockets.
 */
function lowWords(cookies: Iterable<CookieKey>): Set<number> {
  const words = new Set<number>();
  for (const c of cookies) words.add(typeof c === 'number' ? c % 0x100000000 : Number(BigInt(c) & 0xffffffffn));
  return words;
}

/** A loaded pair of iterators filtered to CLOSE_WAIT in the kernel; close() when done. */
export class CloseWaitScanner {
  private readonly native: NativeScanner;
  readonly strings = new Interner();
  /** Holders' cgroups, read afresh each pass (a process may have moved, a pid been reused). */
  cgroups = new CgroupNames();

  constructor(options: { btfPath?: string } = {}) {
    this.native = openNativeScanner(options);
  }

  /**
   * Held sockets (iter/task_file; one pid at a time when `pids` is given), then
   * every netns's (iter/tcp) unless `pids`, while `orphans()` says some are
   * still wanted: a chunk of records at a time, each valid until the next.
   */
  private async *buffers(pids: readonly number[] | undefined, orphans: () => boolean): AsyncGenerator<{ buf: Buffer; held: boolean }> {
    this.cgroups = new CgroupNames();
    if (pids === undefined) {
      for await (const buf of scanChunks(this.native, { kind: 'files', stateMask: CLOSE_WAIT_MASK })) yield { buf, held: true };
    } else {
      for (const pid of pids) {
        try {
          requireProcess(pid);
          for await (const buf of scanChunks(this.native, { kind: 'files', pid, stateMask: CLOSE_WAIT_MASK })) yield { buf, held: true };
        } catch (err) {
          if (err instanceof NotFoundError) continue; // exited meanwhile
          throw err;
        }
      }
      return;
    }
    if (!orphans()) return;
    for await (const { buf } of scanEachNetnsChunks(this.native, { kind: 'tcp', stateMask: CLOSE_WAIT_MASK })) {
      yield { buf, held: false };
      if (!orphans()) return;
    }
  }

  /** Every CLOSE_WAIT socket's raw records, held ones and then every netns's, a chunk at a time (the engine seeds its map with them). */
  async each(onRaw: (records: Buffer) => void): Promise<void> {
    for await (const { buf } of this.buffers(undefined, () => true)) onRaw(buf);
  }

  /**
   * Calls `visit` for each record of a CLOSE_WAIT socket whose cookie `wanted`
   * has: held sockets of every process (of `pids` only, when given: a process
   * tree), then, without `pids` and while `missing()` says some wanted cookie
   * was not seen held, every netns's sockets (those nobody holds are only there).
   */
  async pass(wanted: CookieSet, visit: (cookie: CookieKey, sock: RawSock) => void, missing: () => boolean, pids?: readonly number[]): Promise<void> {
    if (wanted.size === 0) return;
    // Low words first when few cookies are wanted: most records are then skipped without a number made.
    const filter = wanted.size <= FILTER_BELOW ? lowWords(wanted.keys()) : undefined;
    const sock: RawSock = { buf: Buffer.alloc(0), decoder: new SockDecoder(Buffer.alloc(0)), at: 0, held: true };
    for await (const { buf, held } of this.buffers(pids, missing)) {
      sock.buf = buf;
      sock.decoder = new SockDecoder(buf);
      sock.held = held;
      for (let at = 0; at + SOCK_SIZE <= buf.length; at += SOCK_SIZE) {
        if (filter && !filter.has(sockCookieLow(buf, at))) continue;
        const cookie = sockCookieKey(buf, at);
        if (!wanted.has(cookie)) continue;
        sock.at = at;
        visit(cookie, sock);
      }
    }
  }

  /**
   * Calls `visit` for every record of every CLOSE_WAIT socket: held ones (of
   * `pids` only, when given), then, without `pids`, every netns's (a held
   * socket comes again there, not held). What polling without the tracer reads.
   */
  async every(visit: (cookie: CookieKey, sock: RawSock) => void, pids?: readonly number[]): Promise<void> {
    const sock: RawSock = { buf: Buffer.alloc(0), decoder: new SockDecoder(Buffer.alloc(0)), at: 0, held: true };
    for await (const { buf, held } of this.buffers(pids, () => true)) {
      sock.buf = buf;
      sock.decoder = new SockDecoder(buf);
      sock.held = held;
      for (let at = 0; at + SOCK_SIZE <= buf.length; at += SOCK_SIZE) {
        sock.at = at;
        visit(sockCookieKey(buf, at), sock);
      }
    }
  }

  close(): void {
    this.native.close();
  }
}
