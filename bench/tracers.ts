/**
 * The tracers the overhead benchmark compares, one entry each. Adding a row
 * is adding an entry to TRACERS.
 */
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { buildC, ROOT } from './build-c';
import type { Peers } from './peers';

/** What a row's command line may refer to. */
export interface TracerContext {
  /** Path of a peer tool (see peers.ts); only called for tools listed in `needs`. */
  tool(name: string): string;
  /** The node binary and sockleak's CLI script. */
  node: string;
  cli: string;
}

/** Event totals a tracer reports when stopped. */
export interface TracerTotals {
  emitted: bigint;
  lost: bigint;
  mapFull: bigint;
}

export interface TracerRow {
  /** Row label in the tables. */
  name: string;
  /** Peer tools the row needs; when one is missing the row is reported as skipped. */
  needs: readonly string[];
  /** Classic tracepoints: needs tracefs mounted. */
  needsTracefs?: boolean;
  /** Command line. Its stdout goes to /dev/null, stderr is kept for totals and errors. */
  command(ctx: TracerContext): string[];
  /**
   * The process whose utime+stime is the row's user-space cost and whose fds hold
   * its BPF programs. Default: the process started (e.g. a daemonizing agent
   * would read its pid file here).
   */
  costPid?(started: ChildProcess): Promise<number>;
  /** Stderr text that says it is attached (besides holding a stable set of BPF programs). */
  ready?: RegExp;
  /** Signal that stops it cleanly and makes it print totals. Default SIGINT. */
  stopSignal?: NodeJS.Signals;
  /** Parses the totals it prints on stderr when stopped. */
  totals?(stderr: string): TracerTotals | undefined;
  /** The control row: its programs do nothing, so what they are charged per run is the method's floor. */
  floor?: boolean;
}

/**
 * The totals line every live sockleak command prints at exit:
 * trace "sockleak: N events shown, E emitted, L lost, X missed, M map-full",
 * watch "sockleak: N leaks open, E events, L lost, X missed, M map-full",
 * agent "sockleak: N leaks open, R records, E events, L lost, X missed, M map-full, ...".
 */
export function sockleakTotals(stderr: string): TracerTotals | undefined {
  const m = /sockleak: .*?(\d+) (?:emitted|events), (\d+) lost, (?:\d+ missed, )?(\d+) map-full/.exec(stderr);
  return m ? { emitted: BigInt(m[1]!), lost: BigInt(m[2]!), mapFull: BigInt(m[3]!) } : undefined;
}

/** bpftrace doing the least a tracer can: count state changes per new state in a map, send nothing. */
export const BPFTRACE_COUNT = 'tracepoint:sock:inet_sock_set_state { @[args->newstate] = count(); }';

export const TRACERS: readonly TracerRow[] = [
  {
    name: 'empty tp_btf program (floor)',
    needs: ['gcc'],
    // Built here rather than with the workloads: it links libbpf (libbpf-dev, from setup.sh).
    command: (c) => [buildC(c.tool('gcc'), 'empty-tracer', ['-lbpf'])],
    ready: /empty-tracer: attached/,
    floor: true,
  },
  {
    name: 'sockleak trace --json',
    needs: [],
    command: (c) => [c.node, c.cli, 'trace', '--json'],
    ready: /sockleak: tracing/,
    totals: sockleakTotals,
  },
  {
    name: 'sockleak watch --json',
    needs: [],
    command: (c) => [c.node, c.cli, 'watch', '--json'],
    ready: /sockleak: watching/,
    totals: sockleakTotals,
  },
  {
    // Creator stacks (issue #24): a user stack walk per connect(), beside the row without.
    name: 'sockleak watch --stacks --json',
    needs: [],
    command: (c) => [c.node, c.cli, 'watch', '--stacks', '--json'],
    ready: /sockleak: watching/,
    totals: sockleakTotals,
  },
  {
    // Default interval (15 s): its periodic scans land in some windows and not others.
    name: 'sockleak agent',
    needs: [],
    command: (c) => [c.node, c.cli, 'agent', '--listen', '127.0.0.1:0'],
    ready: /sockleak: agent on/,
    totals: sockleakTotals,
  },
  {
    name: 'tcpstates (libbpf-tools)',
    needs: ['tcpstates'],
    needsTracefs: true,
    command: (c) => [c.tool('tcpstates')],
  },
  {
    name: 'bpftrace, count per state',
    needs: ['bpftrace'],
    needsTracefs: true,
    // It says "Attaching 1 probe..." on stdout, before attaching: holding the program is the signal.
    command: (c) => [c.tool('bpftrace'), '-e', BPFTRACE_COUNT],
  },
];

export function tracerContext(peers: Peers): TracerContext {
  return {
    tool: (name) => {
      const where = peers.get(name);
      if (!where) throw new Error(`${name} is not installed`);
      return where;
    },
    node: process.execPath,
    cli: path.join(ROOT, 'bin', 'sockleak.js'),
  };
}
