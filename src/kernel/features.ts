/**
 * Kernel feature probing: what sockleak uses, since which Linux version, what
 * needs it and what happens without it. Probed from the kernel's BTF and by
 * libbpf, so a missing feature is named instead of failing obscurely.
 */
import { loadAddon } from './addon';

export interface FeatureInfo {
  /** Stable id, e.g. "iter/tcp". */
  name: string;
  available: boolean;
  /** First mainline Linux release that has it. */
  since: string;
  /** Commands that need it. */
  neededBy: string;
  /** What sockleak does without it. */
  without: string;
}

const TABLE: Record<string, Omit<FeatureInfo, 'name' | 'available'>> = {
  btf: { since: '5.4 (5.17 for all of sockleak)', neededBy: 'everything', without: 'sockleak cannot run: CO-RE needs the kernel BTF' },
  'tp_btf/inet_sock_set_state': { since: '5.5 (tracepoint 4.16)', neededBy: 'trace, watch, run, agent', without: 'live tracing unavailable; snapshot still works' },
  'tp_btf/sys_enter': { since: '5.5', neededBy: 'trace, watch, run, agent', without: 'live tracing unavailable; snapshot still works' },
  'tp_btf/softirq_entry': { since: '5.5', neededBy: 'trace (event context)', without: 'live tracing unavailable' },
  'tp_btf/sched_process_fork': { since: '5.5', neededBy: 'run (process tree)', without: 'run unavailable' },
  ringbuf: { since: '5.8', neededBy: 'trace, watch, run, agent', without: 'live tracing unavailable; snapshot still works' },
  'iter/task_file': { since: '5.8', neededBy: 'snapshot, watch (owners)', without: 'owners unknown: sockleak cannot attribute leaks' },
  'iter/tcp': { since: '5.9', neededBy: 'snapshot (orphans, TIME_WAIT), ports', without: 'sockets no process holds are not listed' },
  'iter/bpf_map_elem': { since: '5.9', neededBy: 'watch, run, agent', without: 'leak mode unavailable' },
  'helper/sock_from_file': { since: '5.11', neededBy: 'snapshot, watch (owners)', without: 'owners unknown' },
  'helper/get_socket_cookie': { since: '5.12 (from tracing programs)', neededBy: 'everything live', without: 'live tracing unavailable' },
  'helper/skc_to_tcp_sock': { since: '5.9', neededBy: 'snapshot', without: 'snapshot unavailable' },
  'helper/jiffies64': { since: '5.5', neededBy: 'snapshot (timers)', without: 'keepalive and TIME_WAIT timers unknown' },
  'loader/kernel_co_re': {
    since: '5.17',
    neededBy: 'snapshot, watch, ports, agent (the scan iterators\' loader)',
    without: 'the scan iterators do not load',
  },
  'census/established_hash': {
    since: '6.1',
    neededBy: 'snapshot, watch (the census of sockets no process holds)',
    without: "the census is sock_diag's dump, several times the CPU",
  },
  'kfunc/bpf_rdonly_cast': {
    since: '6.2',
    neededBy: 'watch, agent (accept() exit)',
    without: 'accept() exit reads the socket by probe reads, ~140 ns more per connection',
  },
  'kfunc/bpf_sock_destroy': { since: '6.5', neededBy: 'reap', without: 'reap falls back to sock_diag SOCK_DESTROY' },
};

/** Probes the kernel (or the BTF at `btfPath`). Needs no privileges beyond reading the BTF. */
export function probeFeatures(btfPath?: string): FeatureInfo[] {
  return loadAddon()
    .probeFeatures(btfPath)
    .map((f) => ({ ...f, ...(TABLE[f.name] ?? { since: '?', neededBy: '?', without: '?' }) }));
}

/** Features only one command needs, with a fallback: never the reason the others fail. */
const OPTIONAL = new Set(['census/established_hash', 'kfunc/bpf_rdonly_cast', 'kfunc/bpf_sock_destroy']);

/** "iter/tcp (5.9+), ringbuf (5.8+)": the missing required ones, for error messages; '' if none. */
export function describeMissing(btfPath?: string): string {
  try {
    return probeFeatures(btfPath)
      .filter((f) => !f.available && !OPTIONAL.has(f.name))
      .map((f) => `${f.name} (${f.since}+)`)
      .join(', ');
  } catch {
    return '';
  }
}
