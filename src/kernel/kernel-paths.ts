/**
 * Which way each part of sockleak takes on a kernel, given what it refuses:
 * one function per BPF object, used twice: by the loaders, to note the
 * fallbacks they took (from what they were told and what the kernel refused
 * at load), and by `sockleak features`, to predict them from the probe. The
 * two agree by construction; a test checks that the loaders, told nothing,
 * find the same refusals the probe did.
 */
import type { NativeRefusal } from './addon';
import type { Fallback } from './fallbacks';

/** `why` for programs refused without a reason at hand. */
export type Reasons = ReadonlyMap<string, string>;

function why(reasons: Reasons, ...programs: string[]): string {
  for (const p of programs) {
    const r = reasons.get(p);
    if (r) return r;
  }
  return 'refused';
}

/** The scan object (snapshot, watch's owner scans, ports, the agent). */
export function scanFallbacks(refused: ReadonlySet<string>, reasons: Reasons = new Map()): Fallback[] {
  const out: Fallback[] = [];
  if (refused.has('bpf')) {
    out.push({
      what: 'bpf',
      why: why(reasons, 'bpf'),
      instead: 'scanning with sock_diag and /proc, as ss -p',
      lost: "sockets' creator threads and history, and their own keepalive settings (the netns defaults are shown)",
    });
    return out;
  }
  if (refused.has('scan_files') && !refused.has('scan_files_cast')) {
    out.push({ what: 'scan_files', why: why(reasons, 'scan_files'), instead: 'owners read through bpf_rdonly_cast (scan_files_cast); sockets without a cookie get one from sock_diag', lost: '' });
  } else if (refused.has('scan_files')) {
    out.push({
      what: 'scan_files',
      why: why(reasons, 'scan_files', 'scan_files_cast'),
      instead: 'owners from /proc and sock_diag (as ss -p)',
      lost: 'exact last activity (estimated from tcp_info)',
    });
  }
  if (refused.has('scan_tcp')) out.push({ what: 'scan_tcp', why: why(reasons, 'scan_tcp'), instead: "sockets no process holds from sock_diag's dump", lost: 'exact last activity of those (estimated from tcp_info)' });
  if (refused.has('census_ehash')) out.push({ what: 'census_ehash', why: why(reasons, 'census_ehash'), instead: "sock_diag's census", lost: '' });
  if (refused.has('census_tcp')) out.push({ what: 'census_tcp', why: why(reasons, 'census_tcp'), instead: "the port census from sock_diag's dump", lost: '' });
  return out;
}

/**
 * Whether accept()'s stacks are lost (native/tracer-load.cc picks the pair): the cast
 * pair with stacks refused, and either the plain cast pair taken instead or, where
 * the cast is refused too (Linux < 6.2), the probe-read pair with stacks refused.
 */
function acceptStacksLost(refused: ReadonlySet<string>): boolean {
  const any = (...names: string[]): boolean => names.some((n) => refused.has(n));
  if (!any('tp_accept_stacks', 'tp_accept4_stacks')) return false;
  return !any('tp_accept_cast', 'tp_accept4_cast') || any('tp_accept_exit_stacks', 'tp_accept4_exit_stacks', 'tp_accept_exit', 'tp_accept4_exit');
}

/** The trace object: `trace` (leakMode false) or watch/run/agent (leakMode true; run follows a tree). */
export function traceFallbacks(
  refused: ReadonlySet<string>,
  mode: { leakMode: boolean; followTree?: boolean; creatorStacks?: boolean },
  reasons: Reasons = new Map(),
): Fallback[] {
  const out: Fallback[] = [];
  if (mode.leakMode && mode.creatorStacks && refused.has('handle_set_state_stacks')) {
    out.push({ what: 'handle_set_state_stacks', why: why(reasons, 'handle_set_state_stacks'), instead: 'handle_set_state', lost: 'where in the code each leak was made (creator stacks)' });
  } else if (mode.leakMode && mode.creatorStacks && acceptStacksLost(refused)) {
    const [what, ...others] = refused.has('tp_accept_cast') || refused.has('tp_accept4_cast')
      ? ['tp_accept_exit_stacks', 'tp_accept4_exit_stacks']
      : ['tp_accept_stacks', 'tp_accept4_stacks'];
    out.push({ what: what!, why: why(reasons, what!, ...others), instead: 'accept() exit without stacks', lost: 'where in the code accepted sockets were taken (their creator stacks)' });
  }
  if (mode.leakMode && (refused.has('new_leaks') || refused.has('new_socket_leaks'))) {
    out.push({
      what: 'new_leaks',
      why: why(reasons, 'new_leaks', 'new_socket_leaks'),
      instead: 'user space reads the leak maps (BPF_MAP_LOOKUP_BATCH and the mmapped slots)',
      lost: '',
    });
  }
  const tracepoints = !['tp_close_enter', 'tp_close_exit', 'tp_bind_enter', 'tp_bind_exit'].some((p) => refused.has(p));
  if (mode.leakMode && !tracepoints) {
    const lost = mode.creatorStacks ? 'where in the code accepted sockets were taken (their creator stacks)' : '';
    out.push({ what: 'tp_close_enter', why: why(reasons, 'tp_close_enter', 'tp_close_exit', 'tp_bind_enter', 'tp_bind_exit'), instead: 'tp_btf hooks on every syscall (more CPU per syscall)', lost });
  }
  if (mode.leakMode && tracepoints && (refused.has('tp_accept_cast') || refused.has('tp_accept4_cast'))) {
    const probeReads = !refused.has('tp_accept_exit') && !refused.has('tp_accept4_exit');
    out.push(
      probeReads
        ? { what: 'tp_accept_cast', why: why(reasons, 'tp_accept_cast', 'tp_accept4_cast'), instead: 'accept() exit by probe reads (tp_accept_exit)', lost: '' }
        : { what: 'tp_accept_cast', why: why(reasons, 'tp_accept_exit', 'tp_accept_cast'), instead: 'no accept() hook', lost: 'the thread that accepted each socket' },
    );
  }
  if (!mode.leakMode && (refused.has('handle_softirq_entry') || refused.has('handle_softirq_exit'))) {
    out.push({ what: 'handle_softirq_entry', why: why(reasons, 'handle_softirq_entry', 'handle_softirq_exit'), instead: 'no softirq hook', lost: 'whether a transition ran in softirq context' });
  }
  return out;
}

/** The reap object. */
export function reapFallbacks(refused: ReadonlySet<string>, reasons: Reasons = new Map()): Fallback[] {
  return refused.has('reap_tcp') || refused.has('bpf')
    ? [{ what: 'reap_tcp', why: why(reasons, 'reap_tcp', 'bpf'), instead: 'sock_diag SOCK_DESTROY', lost: 'the check under the socket lock (re-checked just before instead)' }]
    : [];
}

/** The program the tracer cannot do without: where it is refused, watch, run and agent work by successive scans. */
export const TRACER_CORE = ['handle_set_state'] as const;
/** What `run`'s tracer also needs (it follows the command's process tree): without it, run polls, following the tree in /proc. */
export const TREE_PROGRAMS = ['handle_fork', 'handle_exit'] as const;

/**
 * What a loader was told (`known`: name -> why) and what the kernel refused
 * while it loaded (`met`), as the set and reasons the functions above take.
 * Loader-level entries of `met` ("light skeleton with ...") are the loader's
 * own affair: they cost a few ms and lose nothing.
 */
export function mergeRefusals(known: ReadonlyMap<string, string>, met: readonly NativeRefusal[]): { refused: Set<string>; reasons: Map<string, string> } {
  const reasons = new Map(known);
  for (const r of met) {
    if (!r.program.includes(' ')) reasons.set(r.program, `${r.code}: ${r.reason}`);
  }
  return { refused: new Set(reasons.keys()), reasons };
}

/** One command's way on a kernel, as `sockleak features` predicts it. */
export interface CommandPath {
  command: string;
  /** Whether the command can do its job at all (on its fallbacks or not). */
  works: boolean;
  /** The ways taken where the kernel refused the first one. */
  fallbacks: Fallback[];
}

/** Every command's way, given what the kernel refuses (kernel-probe.ts knownRefusals()). */
export function commandPaths(refused: ReadonlySet<string>, reasons: Reasons = new Map()): CommandPath[] {
  const scan = scanFallbacks(refused, reasons);
  const noTracer = refused.has('bpf') || TRACER_CORE.some((p) => refused.has(p));
  // The scan-based leak engine (scan-watcher.ts) notes itself under `bpf` or `tracer`.
  const polling = (what: string): Fallback => ({
    what,
    why: why(reasons, what === 'bpf' ? 'bpf' : TRACER_CORE[0]),
    instead: 'polling CLOSE_WAIT sockets',
    lost: 'creators of leaks, who closed them, connect() failures and active closes; leaks are seen at poll granularity',
  });
  const live = (followTree: boolean): Fallback[] => {
    if (refused.has('bpf')) return [polling('bpf')];
    if (noTracer || (followTree && TREE_PROGRAMS.some((p) => refused.has(p)))) return [polling('tracer'), ...scan];
    // run always captures creator stacks; watch and agent only when asked (--stacks).
    return [...traceFallbacks(refused, { leakMode: true, followTree, creatorStacks: followTree }, reasons), ...scan];
  };
  const unique = (list: Fallback[]): Fallback[] => [...new Map(list.map((f) => [f.what, f])).values()];
  return [
    { command: 'snapshot', works: true, fallbacks: scan },
    { command: 'ports', works: true, fallbacks: scan },
    { command: 'watch', works: true, fallbacks: unique(live(false)) },
    { command: 'run', works: true, fallbacks: unique(live(true)) },
    { command: 'agent', works: true, fallbacks: unique(live(false)) },
    { command: 'trace', works: !noTracer, fallbacks: noTracer ? [] : traceFallbacks(refused, { leakMode: false }, reasons) },
    { command: 'reap', works: true, fallbacks: unique([...reapFallbacks(refused, reasons), ...scan]) },
  ];
}
