/**
 * What every kind of scan stands on: the addon's scanner opened after the
 * privilege and BTF checks, native errors turned into typed ones, the network
 * namespaces that have a process, and a run of one request in each of them.
 * SocketScanner (scan.ts) and the lean scans (close-wait-scan.ts, port-scan.ts,
 * agent/state-counts.ts) are built on these; the lean ones read in chunks
 * (scanChunks()), so that a scan of 200k sockets holds ~1 MiB of records at a
 * time instead of all 22 MB.
 */
import { readdirSync, readlinkSync } from 'node:fs';
import { loadAddon, type NativeScanner, type NativeScanRequest } from '../kernel/addon';
import { noteFallback } from '../kernel/fallbacks';
import { KernelUnsupportedError, PermissionError } from '../errors';
import { SOCK_SIZE } from '../generated/layout';
import { mergeRefusals, scanFallbacks } from '../kernel/kernel-paths';
import { knownRefusals } from '../kernel/kernel-probe';
import { bpfUnusable, canEnterNetns, explainNativeError } from '../kernel/preflight';
import { tcpStateNumber, type TcpState } from '../tcp-states';

/** Bit mask of kernel state numbers for the iterators' in-kernel filter; 0 = all. */
export function stateMask(states: readonly TcpState[] | undefined): number {
  if (!states || states.length === 0) return 0;
  let mask = 0;
  for (const s of states) mask |= 1 << (tcpStateNumber(s) ?? 0);
  return mask >>> 0;
}

const nsInode = (link: string): number => Number(/\[(\d+)\]/.exec(link)?.[1]);

/** One path per distinct network namespace that has a process in it: /proc/PID/ns/net. */
export function networkNamespaces(): Map<number, string> {
  const found = new Map<number, string>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const path = `/proc/${entry}/ns/net`;
    try {
      const ino = nsInode(readlinkSync(path));
      if (ino && !found.has(ino)) found.set(ino, path);
    } catch {
      // the process exited, or is a kernel thread without namespaces
    }
  }
  return found;
}

/** Inode of this process's network namespace. */
export function ownNetns(): number {
  return nsInode(readlinkSync('/proc/self/ns/net'));
}

/**
 * How a request reaches namespace `ino` (whose /proc/PID/ns/net is `path`): by
 * that path, or, for our own, with no path at all, since entering even our own
 * namespace with setns() wants CAP_SYS_ADMIN.
 */
export function netnsTarget(ino: number, path: string, own = ownNetns()): { netnsPath?: string } {
  return ino === own ? {} : { netnsPath: path };
}

/**
 * The addon's scanner; it loads its BPF object with the first iterator scan (or
 * preload()). The object is a light skeleton that the kernel relocates against
 * its own BTF, so a `btfPath` is only what the preflight requires to exist, as
 * for every command (the tracer's CO-RE does use it). Where BPF is unusable
 * (SOCKLEAK_REFUSE=bpf, no CAP_BPF, no BTF) but /proc is readable, every scan
 * comes from sock_diag and /proc instead, and that is noted; where neither is,
 * PermissionError or KernelUnsupportedError.
 */
export function openNativeScanner(options: { btfPath?: string } = {}): NativeScanner {
  const known = knownRefusals(options.btfPath);
  const why = bpfUnusable(options.btfPath, known.has('bpf'));
  if (why && !known.has('bpf')) known.set('bpf', why);
  try {
    const native = new (loadAddon().Scanner)({ refused: [...known.keys()], ...(options.btfPath && { btfPath: options.btfPath }) });
    unnoted.set(native, known);
    return native;
  } catch (err) {
    throw explainNativeError(err);
  }
}

/** Scanners whose fallbacks are not noted yet, with the refusals they were told of. */
const unnoted = new WeakMap<NativeScanner, Map<string, string>>();

/**
 * Notes the ways `native` took (kernel-paths.ts), once, after its load (not
 * after a sock_diag census, which loads nothing: loadReport() would load now).
 * A kernel that refused the whole object (lockdown, seccomp) is `bpf` refused.
 */
function noteScanWays(native: NativeScanner, kind: NativeScanRequest['kind']): void {
  const known = unnoted.get(native);
  if (!known || kind === 'cookies') return;
  unnoted.delete(native);
  const report = native.loadReport();
  const { refused, reasons } = mergeRefusals(known, report.refusals);
  if (report.loader === 'none' && !refused.has('bpf')) {
    const first = report.refusals[0];
    refused.add('bpf');
    reasons.set('bpf', first ? `${first.code}: ${first.reason}` : 'the kernel refused every program');
  }
  for (const fallback of scanFallbacks(refused, reasons)) noteFallback(fallback);
}

/** One native scan to its end; errors typed. */
export async function runScan(native: NativeScanner, request: NativeScanRequest): Promise<Buffer> {
  try {
    return await native.scan(request);
  } catch (err) {
    throw explainNativeError(err);
  } finally {
    noteScanWays(native, request.kind);
  }
}

/**
 * True for the error of a namespace whose last process exited before it could
 * be entered, or, without CAP_SYS_ADMIN, of one this process may not enter
 * (noted once: its sockets are not seen; a container without CAP_BPF still scans its own).
 */
export function isVanishedNetns(err: unknown): boolean {
  if (err instanceof PermissionError && /entering network namespace/.test(err.message) && !canEnterNetns()) {
    noteFallback({ what: 'setns', why: 'no CAP_SYS_ADMIN', instead: 'scanning this network namespace only', lost: 'sockets of the other network namespaces' });
    return true;
  }
  return err instanceof KernelUnsupportedError && /netns/.test(err.message);
}

/**
 * Runs `request` once in each network namespace (default: every one that has
 * a process), in turn, and yields each one's result; ours is scanned without
 * setns() (which wants CAP_SYS_ADMIN), and a namespace whose last process
 * exited meanwhile is skipped.
 */
export async function* scanEachNetns(
  native: NativeScanner,
  request: Omit<NativeScanRequest, 'netnsPath'>,
  namespaces: Iterable<[number, string]> = networkNamespaces(),
): AsyncGenerator<{ netns: number; buf: Buffer }> {
  const own = ownNetns();
  for (const [netns, path] of namespaces) {
    let buf: Buffer;
    try {
      buf = await runScan(native, { ...request, ...netnsTarget(netns, path, own) });
    } catch (err) {
      if (isVanishedNetns(err)) continue;
      throw err;
    }
    yield { netns, buf };
  }
}

/** Bytes a chunked scan reads at a time: 9362 records, a few ms of decoding. */
export const CHUNK_BYTES = SOCK_SIZE * Math.floor((1 << 20) / SOCK_SIZE);

/** One chunk buffer kept between scans; scans that overlap take their own, which the GC reclaims. */
let idleChunk: Buffer | undefined;

/**
 * Runs a 'files' or 'tcp' request and yields its records a chunk at a time
 * (whole struct sl_sock records, at most CHUNK_BYTES). Each chunk is valid
 * until the next one is asked for: the same memory is filled again. Breaking
 * out of the loop ends the iteration in the kernel.
 */
export async function* scanChunks(native: NativeScanner, request: NativeScanRequest & { kind: 'files' | 'tcp' }): AsyncGenerator<Buffer> {
  let cursor;
  try {
    cursor = new (loadAddon().ScanCursor)(native, request);
  } catch (err) {
    throw explainNativeError(err);
  }
  const chunk = idleChunk ?? Buffer.allocUnsafeSlow(CHUNK_BYTES);
  idleChunk = undefined;
  try {
    for (;;) {
      let n: number;
      try {
        n = await cursor.read(chunk);
      } catch (err) {
        throw explainNativeError(err);
      }
      if (n === 0) {
        noteScanWays(native, request.kind);
        return;
      }
      yield chunk.subarray(0, n);
    }
  } finally {
    cursor.close();
    idleChunk = chunk;
  }
}

/**
 * scanEachNetns() in chunks: every namespace's records, a chunk at a time (see
 * scanChunks()); a namespace whose last process exited before its iterator
 * was made is skipped.
 */
export async function* scanEachNetnsChunks(
  native: NativeScanner,
  request: Omit<NativeScanRequest, 'netnsPath' | 'kind'> & { kind: 'tcp' },
  namespaces: Iterable<[number, string]> = networkNamespaces(),
): AsyncGenerator<{ netns: number; buf: Buffer }> {
  const own = ownNetns();
  for (const [netns, path] of namespaces) {
    try {
      for await (const buf of scanChunks(native, { ...request, ...netnsTarget(netns, path, own) })) yield { netns, buf };
    } catch (err) {
      if (isVanishedNetns(err)) continue; // its iterator is made by the first read, before any chunk
      throw err;
    }
  }
}
