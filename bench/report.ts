/** docs/benchmarks.md: the machine, the tables of this run, how to reproduce, and the method. */
import type { MachineInfo } from './system';
import { renderMarkdown, type Table } from './table';
import { BPFTRACE_COUNT } from './tracers';

export interface ReportInput {
  machine: MachineInfo;
  versions: Record<string, string>;
  command: string;
  durationS: number;
  /** Busy CPUs before the run started (other people's work on a shared VM). */
  backgroundCpus: number;
  /** Warnings about this run's figures, printed above the results. */
  caveats: string[];
  sections: Array<{ heading: string; tables: Table[] }>;
  /** The hand-kept part of the report being replaced (keptPart()), carried over after Method. */
  kept?: string;
}

/**
 * Heading of the part of docs/benchmarks.md written by hand (the one-off
 * figures the code's comments point to): a rewrite carries it over as it is.
 */
export const KEPT_HEADING = '## Figures behind design choices';

/** The hand-kept part of a report, from KEPT_HEADING to the end; '' when it has none. */
export function keptPart(report: string): string {
  const at = report.search(new RegExp(`^${KEPT_HEADING}$`, 'm'));
  return at < 0 ? '' : report.slice(at);
}

const METHOD = `## Method

The VMs this runs on are shared: wall-clock throughput swings ±30% between identical runs, and
hardware counters are unavailable. What repeats within a few percent is **CPU time per unit of
work**, so overhead is measured in CPU, per connection (see \`shared/BENCHMARKING.md\`).

**Workload** (\`bench/churn.c\`, built with \`gcc -O2\` into \`bench/.build/\`): one server thread
accepts and closes at once; two client threads connect to it on loopback, read until the server's
FIN, and close, as fast as they can, for a fixed number of connections. The server closes first,
so TIME_WAIT lands on the server side and the clients never run out of ephemeral ports. Each
connection makes 10 \`inet_sock_set_state\` transitions. The churn reports its own CPU time
(\`getrusage(RUSAGE_SELF)\`, all threads, including the softirq work charged to it) over the churn
only.

**One run of one tracer**: start it (stdout to \`/dev/null\`, as its own process, with
\`setpriv --pdeathsig KILL\` so it cannot outlive the benchmark); wait until it holds a stable set
of BPF programs that did not exist before it started (ids from \`/proc/PID/fdinfo\` of its
\`bpf-prog\`/\`bpf_link\` fds, which also keeps out programs anyone else loads meanwhile) and, for
tools that say so, until it prints that it is attached; then until its CPU time stops moving
(start-up work, such as sockleak seeding the CLOSE_WAIT sockets already on the machine and its
first port census, is not a per-connection cost); then read
\`bpftool -j prog show\` (\`run_time_ns\`, \`run_cnt\`, with \`kernel.bpf_stats_enabled=1\`) and the
tracer's \`utime+stime\` (\`/proc/PID/stat\` fields 14–15); run the churn; wait until the tracer's
CPU time stops moving (it has consumed everything); read both again; stop it with SIGINT and parse
the totals it prints.

- **BPF ns/conn** = Σ Δ\`run_time_ns\` of the tracer's programs ÷ connections. It includes every
  run of those programs on the machine in the window (a syscall hook fires for every process).
- **user ns/conn** = Δ(utime+stime) of the tracer process ÷ connections (10 ms tick resolution,
  negligible over seconds of CPU).
- **base ns/conn** = churn CPU ÷ connections − BPF ns/conn (BPF runs mostly in the churn's context).
- **overhead** = (BPF + user) ÷ base.
- **overhead on untraced base** = (BPF + user) ÷ the untraced run's base: a cross-check. \`run_time_ns\`
  is wall time inside the program, so an interrupt that lands in it, and the softirq work (packets
  of the same churn) run when that interrupt exits, are most likely counted as BPF time too. We
  see it most when the program itself raises interrupts (tcpstates wakes its reader on every event)
  or when the CPUs are contended (a busy user-space reader): the base then comes out smaller than
  the untraced one and the first overhead too large. A nested state change on the same CPU is skipped by the kernel and
  shows as a **recursion miss** (an event the tracer never saw).
- **floor** and **above floor**: while \`kernel.bpf_stats_enabled=1\`, the kernel reads
  \`sched_clock()\` before and after every program run, and what lies between the two reads is
  charged to the program, however little it does. The first row loads a program that does nothing
  (\`bench/empty-tracer.c\`: \`return 0\` on \`tp_btf/inet_sock_set_state\`); its run time per run is
  that floor, ~80 ns on these VMs (kvm-clock), paid by every run of every row's programs. **BPF
  above floor** = BPF − floor × the row's program runs per connection, and **overhead above floor**
  = (that + user) ÷ base: what a tracer adds with stats off, as in production. (The tracepoint's own
  dispatch, outside the program, is in neither figure; the untraced cross-check has it.)
- **× untraced**: connections/s ÷ the untraced run of the same repetition; for reference only.
- **other load** and **other BPF**: busy CPU on the machine during the churn that was neither the
  churn's nor the tracer's, and run time of BPF programs that are not the row's. These VMs are
  shared; figures are clean only when both are near 0.
- Rows are interleaved (untraced, tracer 1, tracer 2, … then again) after one warm-up churn, and
  every figure is the median over the repetitions.

Rows (one entry each in \`bench/tracers.ts\`): untraced; the empty program (the floor, above);
\`sockleak trace --json > /dev/null\`
(every event as JSON); \`sockleak watch --json > /dev/null\` (leak mode: only sockets that stay in
CLOSE_WAIT past the threshold are reported, so a churn sends next to nothing to user space);
\`sockleak agent --listen 127.0.0.1:0\` (the same programs in leak mode, plus its every-15-s
state counts and port census, which land in some windows and not in others);
libbpf-tools \`tcpstates > /dev/null\`; bpftrace with
\`${BPFTRACE_COUNT}\` (counts per state in a map, sends nothing: close to the least any tracer of
every state change can cost). tcpstates and bpftrace attach classic tracepoints, so the benchmark
mounts tracefs when it is missing (and unmounts it after); sockleak needs no tracefs.

**Snapshot**: a listener (\`bench/closewait.c listen\`) on 127.0.0.2–127.0.0.11 accepts and closes
every connection; P holder processes (\`closewait hold\`) open K/P connections each, round-robin over
those destinations (so the default ephemeral port range suffices; it is widened, and restored, only
if a destination would need more than half of it) and never close them, so they stay in
CLOSE_WAIT; each holder writes the truth (local, remote, fd). Each tool is then timed from spawn to
exit, and its output compared with the truth by (local, remote) and owner (pid, fd). The tools run
in rounds (each tool once, then again), and in each round, right after ss, the benchmark's own
process times sockleak's kernel scan alone (iter/task_file beside its census of the established
hash, the BPF objects already loaded) five times; the round's figure is their median, and the kernel-scan ratio
is the median of the rounds' ss ÷ kernel scan, each pair taken the same moment. All processes
are killed at the end, on failure too (and die with the benchmark through \`PR_SET_PDEATHSIG\`).
`;

export function renderReport(r: ReportInput): string {
  const m = r.machine;
  const versions = Object.entries(r.versions)
    .filter(([, v]) => v)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  return [
    '# Benchmarks',
    '',
    '_Generated by `npm run bench`; the tables below are from an actual run. Re-run to refresh._',
    '',
    '## Machine',
    '',
    `- ${m.nproc} CPUs (${m.cpuModel}), ${m.memGiB} GiB, shared VM`,
    `- ${m.os}, kernel ${m.kernel}, Node ${m.node}`,
    `- peers: ${versions}`,
    `- run: \`${r.command}\`, ${m.date}, ${Math.round(r.durationS)} s; ${r.backgroundCpus.toFixed(2)} CPUs busy with other work just before it started`,
    '',
    '## How to reproduce',
    '',
    'As root, from a clone (after `scripts/setup.sh`):',
    '',
    '```sh',
    'npm run build:ts && npm run bench             # full run (~5–10 min); rewrites docs/benchmarks.md',
    'npm run bench -- --quick                      # short run (< 2 min); prints only, add --write to save',
    '```',
    '',
    'Other flags: `--reps N`, `--connections N`, `--no-overhead`, `--no-snapshot`, `--no-startup`, `--no-agent`, `--out FILE`, `--only NAME,...` (only the tracer rows whose name contains one of these).',
    'Missing peers (libbpf-tools, bpftrace, iproute2, lsof, gcc, bpftool, GNU time) are installed with apt-get.',
    '',
    '## Results',
    '',
    ...r.caveats.flatMap((c) => [`> **Caveat.** ${c}`, '']),
    ...r.sections.flatMap((s) => [`## ${s.heading}`, '', ...s.tables.map(renderMarkdown)]),
    METHOD,
    ...(r.kept ? [r.kept.trimEnd(), ''] : []),
  ].join('\n');
}
