/**
 * The native addon, loaded with `bindings` (or from SOCKLEAK_ADDON, e.g. the
 * cmake-js build), and checked against the generated event layout so that a
 * stale build fails loudly instead of decoding garbage.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import bindings from 'bindings';
import { MissingLibraryError, SockleakError, ExitCode } from '../errors';
import { CENSUS_SOCK_SIZE, CLOSE_COUNT_SIZE, CLOSE_KEY_SIZE, COUNTERS_SIZE, EVENT_SIZE, PORT_CENSUS_SIZE, REAP_REQUEST_SIZE, REAP_RESULT_SIZE, SOCK_SIZE } from '../generated/layout';

/**
 * Options as the addon takes them; validated, and defaulted, by
 * src/trace/tracer.ts first. The addon throws a TypeError for a missing
 * required one: it has no defaults of its own.
 */
export interface NativeTracerOptions {
  pid?: number;
  ringBytes: number;
  wakeupBytes: number;
  pollMs: number;
  btfPath?: string;
  /** Programs not to load (kernel-probe.ts knownRefusals()). */
  refused: string[];
  leakMode: boolean;
  maxSockets: number;
  followTree: boolean;
  trackCreators: boolean;
  /** With trackCreators: capture the user stack of each connect() (handle_set_state_stacks). */
  creatorStacks: boolean;
  /** Absent: the BPF object's own count (SL_SOCKET_SLOTS in bpf/sockleak.h). */
  socketSlots?: number;
  faultInject: number;
}

export interface NativeCounters {
  emitted: bigint;
  lost: bigint;
  mapFull: bigint;
  missed: bigint;
}

export interface NativeProgramStats {
  name: string;
  id: number;
  runTimeNs: bigint;
  runCount: bigint;
}

export interface NativeTracer {
  close(): Promise<void>;
  counters(): NativeCounters;
  programStats(): NativeProgramStats[];
  collectLeaks(cutoffNs: bigint): Buffer;
  seed(rawScan: Buffer): number;
  forget(cookies: bigint[]): void;
  follow(rawScan: Buffer): number;
  hooks(): {
    syscalls: 'tracepoint' | 'tp_btf';
    mountedTracefs: boolean;
    leakWalk: 'iterator' | 'user';
    creatorStacks: boolean;
    refusals: NativeRefusal[];
  };
  /** The `user_stacks` entry `id`: frames innermost first, and the words at the user stack pointer on entry (all ones: mixed; empty: none). */
  readStack(id: number): { frames: BigUint64Array; words: BigUint64Array } | null;
  activeCloses(): Buffer;
  treeAdd(pid: number): void;
  treePids(): number[];
}

export interface NativeScanRequest {
  /**
   * files: iter/task_file records; tcp: iter/tcp records; cookies: sock_diag's
   * u64 cookies only; ehash: the same census walked by BPF, struct
   * sl_census_sock records (rejected with EAGAIN when the walk cannot vouch for
   * it, EINVAL for LISTEN or CLOSE); census: no sockets, one struct
   * sl_port_census for the netns.
   */
  kind: 'files' | 'tcp' | 'cookies' | 'ehash' | 'census';
  pid?: number;
  stateMask?: number;
  netnsPath?: string;
}

/** A program, or a loader, the kernel refused: errno and the verifier's last words. */
export interface NativeRefusal {
  program: string;
  errno: number;
  code: string;
  reason: string;
}

export interface NativeScanner {
  /** Loads now, on this thread, and says how: `light`, `light-cast`, `libbpf` or `none`; the programs loaded; what was refused on the way. */
  loadReport(): { loader: string; programs: string[]; refusals: NativeRefusal[] };
  /** Runs one scan to the end on the thread pool: raw struct sl_sock records (u64 cookies for 'cookies', sl_census_sock for 'ehash', one sl_port_census for 'census'). */
  scan(request: NativeScanRequest): Promise<Buffer>;
  /** Starts loading the BPF object on the thread pool now (it is otherwise loaded by the first iterator scan); returns at once. */
  preload(): void;
  close(): void;
}

/** One 'files' or 'tcp' iteration read a chunk at a time into the caller's Buffer (native/scanner.h ScanCursor). */
export interface NativeScanCursor {
  /** Fills `into` with whole struct sl_sock records on the thread pool: the byte count, 0 once the iteration is over. One read at a time; leave `into` alone until it settles. */
  read(into: Buffer): Promise<number>;
  /** Ends the iteration early. */
  close(): void;
}

/** How the reaper destroys sockets: `auto` = bpf_sock_destroy where the kernel has it (6.5+), else sock_diag. */
export type NativeReapMethod = 'auto' | 'bpf' | 'sock_diag';

export interface NativeReaper {
  /**
   * Re-checks and destroys the sockets named by `requests` (struct sl_reap_request
   * records), visiting each namespace in `netnsPaths`, on the thread pool: one
   * struct sl_reap_result per request.
   */
  reap(requests: Buffer, netnsPaths: string[]): Promise<Buffer>;
  /** 'bpf_sock_destroy' or 'sock_diag'. */
  method(): string;
  /** Why bpf_sock_destroy is not used ('' when it is, or when sock_diag was asked for). */
  fallbackReason(): string;
  close(): void;
}

/** What the addon throws: errno name, failing stage and program, libbpf's log. */
export interface NativeError extends Error {
  code: string;
  errno: number;
  stage: string;
  program: string;
  log: string;
  /** The verifier's last words in `log`, or the errno's text (native/refusal.h). */
  reason: string;
}

interface Addon {
  Tracer: new (options: NativeTracerOptions, onBatch: (batch: Buffer) => void) => NativeTracer;
  Scanner: new (options?: { refused?: string[]; btfPath?: string }) => NativeScanner;
  ScanCursor: new (scanner: NativeScanner, request: NativeScanRequest & { kind: 'files' | 'tcp' }) => NativeScanCursor;
  Reaper: {
    new (options: { btfPath?: string; method?: NativeReapMethod }): NativeReaper;
    REQUEST_SIZE: number;
    RESULT_SIZE: number;
  };
  /** Makes glibc give large freed blocks back at once (mallopt; process-wide, for the long-running agent). */
  releaseLargeAllocations(): void;
  probeFeatures(btfPath?: string): Array<{ name: string; available: boolean }>;
  /** Loads every program of every object (nothing attached): what this kernel accepts, and why not. */
  probePrograms(btfPath?: string): Array<{ object: string; program: string; loaded: boolean; errno: number; code: string; reason: string }>;
  /** A hash of the BPF objects this addon embeds. */
  programsId(): string;
  EVENT_SIZE: number;
  COUNTERS_SIZE: number;
  SOCK_SIZE: number;
  PORT_CENSUS_SIZE: number;
  CENSUS_SOCK_SIZE: number;
  CLOSE_PAIR_SIZE: number;
}

let cached: Addon | undefined;

/**
 * Where `bindings` looks: the package root given (it would otherwise find it
 * from a stack trace) and node-gyp's outputs only, Release first. Each miss is
 * a failed require() with a stack trace of its own; with bindings' default
 * list, finding build/Release was a visible part of a one-shot `snapshot`
 * (docs/benchmarks.md, "Figures behind design choices").
 */
const BINDINGS_OPTIONS = {
  bindings: 'sockleak',
  module_root: path.resolve(__dirname, '..', '..', '..'),
  try: [
    ['module_root', 'build', 'Release', 'bindings'],
    ['module_root', 'build', 'Debug', 'bindings'],
  ],
};

/** The shared libraries the addon links beyond libc and libstdc++ (binding.gyp's -lbpf and libbpf's own), and their Debian packages. */
const RUNTIME_LIBRARIES: Record<string, string> = {
  'libbpf.so.1': 'libbpf1',
  'libelf.so.1': 'libelf1',
  'libz.so.1': 'zlib1g',
};

/**
 * The dynamic loader's complaint about a runtime library, as one line that
 * names the package to install; undefined for any other load failure. Covers
 * a library that is absent (or unreadable) and one too old for a symbol the
 * addon needs (`version 'LIBBPF_0.7.0' not found`).
 */
export function missingLibrary(loaderMessage: string): MissingLibraryError | undefined {
  const absent = /(lib[\w+-]+\.so(?:\.\d+)*): (?:cannot open shared object file|file too short|invalid ELF header)/.exec(loaderMessage);
  const old = /\/(lib[\w+-]+\.so(?:\.\d+)*): version `([^']+)' not found/.exec(loaderMessage);
  const library = absent?.[1] ?? old?.[1];
  if (!library || !Object.hasOwn(RUNTIME_LIBRARIES, library)) return undefined;
  const what = old ? `${library} is too old (no ${old[2]})` : `${library} not found`;
  return new MissingLibraryError(
    `${what}: sockleak's native addon needs libbpf 1.x, libelf and zlib (Debian/Ubuntu: apt-get install ${Object.values(RUNTIME_LIBRARIES).join(' ')})`,
  );
}

/** Loads the addon once. Throws a SockleakError if it is missing or stale. */
export function loadAddon(): Addon {
  if (cached) return cached;
  let addon: Addon;
  try {
    const path = process.env.SOCKLEAK_ADDON;
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    addon = (path ? require(path) : bindings(BINDINGS_OPTIONS)) as Addon;
  } catch (err) {
    const message = (err as Error).message.split('\n')[0] ?? '';
    const fix = existsSync(path.join(BINDINGS_OPTIONS.module_root, 'bpf', 'trace.bpf.c'))
      ? 'run scripts/setup.sh'
      : "reinstall sockleak with npm's --allow-scripts=sockleak: its install script compiles the addon where the prebuilt one does not load (docs/install.md)";
    throw missingLibrary(message) ?? new SockleakError(`native addon not built or not loadable (${message}); ${fix}`, ExitCode.SOFTWARE);
  }
  if (
    addon.EVENT_SIZE !== EVENT_SIZE ||
    addon.COUNTERS_SIZE !== COUNTERS_SIZE ||
    addon.SOCK_SIZE !== SOCK_SIZE ||
    addon.PORT_CENSUS_SIZE !== PORT_CENSUS_SIZE ||
    addon.CENSUS_SOCK_SIZE !== CENSUS_SOCK_SIZE ||
    addon.CLOSE_PAIR_SIZE !== CLOSE_KEY_SIZE + CLOSE_COUNT_SIZE ||
    addon.Reaper?.REQUEST_SIZE !== REAP_REQUEST_SIZE ||
    addon.Reaper?.RESULT_SIZE !== REAP_RESULT_SIZE
  ) {
    throw new SockleakError(
      `native addon is stale: its struct sizes (${addon.EVENT_SIZE}, ${addon.COUNTERS_SIZE}, ${addon.SOCK_SIZE}) ` +
        `differ from the generated layout (${EVENT_SIZE}, ${COUNTERS_SIZE}, ${SOCK_SIZE}); run npm run build`,
      ExitCode.SOFTWARE,
    );
  }
  cached = addon;
  return addon;
}

export function isNativeError(err: unknown): err is NativeError {
  return err instanceof Error && typeof (err as Partial<NativeError>).stage === 'string';
}
