/**
 * `npm run bench [-- --quick]`: overhead of sockleak's tracer next to its peers,
 * snapshot of many CLOSE_WAIT sockets, and the agent's memory with 100k and
 * 200k leaked sockets (not in --quick); prints one table per section and
 * writes docs/benchmarks.md. Needs root. Whatever it changes on the machine
 * (sysctls, tracefs) it restores, and every process it starts it ends, also on
 * failure or Ctrl-C.
 */
import fs from 'node:fs';
import path from 'node:path';
import { disableBpfStats, enableBpfStats } from './bpf-stats';
import { buildC, ROOT } from './build-c';
import { killAll, sleep } from './children';
import { background, overheadTables, runOverhead } from './overhead';
import { ensurePeers, packageVersion } from './peers';
import { runAgentRss } from './agent-rss';
import { keptPart, renderReport } from './report';
import { runSnapshot, snapshotTable, type SnapshotSize } from './snapshot';
import { runStartup } from './startup';
import { ensureTracefs, machineBusyNs, machineInfo, Restorer } from './system';
import { renderText, type Table } from './table';
import { TRACERS, tracerContext } from './tracers';

interface Args {
  quick: boolean;
  reps: number;
  connections: number;
  overhead: boolean;
  snapshot: boolean;
  /** The command's start-up (startup.ts). */
  startup: boolean;
  /** The agent's memory with leaked sockets held (agent-rss.ts); not in --quick. */
  agent: boolean;
  write: boolean;
  out: string;
  /** Only the tracer rows whose name contains one of these (the untraced row always runs). */
  only: string[] | undefined;
}

const USAGE = `usage: npm run bench -- [--quick] [--reps N] [--connections N] [--no-overhead] [--no-snapshot] [--no-startup] [--no-agent] [--write|--no-write] [--out FILE] [--only NAME,...]`;

function parseArgs(argv: string[]): Args {
  const quick = argv.includes('--quick');
  const args: Args = {
    quick,
    reps: quick ? 2 : 5,
    connections: quick ? 50_000 : 100_000,
    overhead: true,
    snapshot: true,
    startup: true,
    agent: !quick,
    write: !quick,
    out: path.join(ROOT, 'docs', 'benchmarks.md'),
    only: undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value\n${USAGE}`);
      return v;
    };
    const positive = (): number => {
      const n = Number(value());
      if (!Number.isInteger(n) || n <= 0) throw new Error(`${a} needs a positive integer\n${USAGE}`);
      return n;
    };
    if (a === '--quick') continue;
    else if (a === '--reps') args.reps = positive();
    else if (a === '--connections') args.connections = positive();
    else if (a === '--no-overhead') args.overhead = false;
    else if (a === '--no-snapshot') args.snapshot = false;
    else if (a === '--no-startup') args.startup = false;
    else if (a === '--no-agent') args.agent = false;
    else if (a === '--write') args.write = true;
    else if (a === '--no-write') args.write = false;
    else if (a === '--out') args.out = path.resolve(value());
    else if (a === '--only') args.only = value().split(',');
    else throw new Error(`unknown argument ${a}\n${USAGE}`);
  }
  return args;
}

const log = (line: string): void => void process.stderr.write(`bench: ${line}\n`);

/** CPUs' worth of busy time on the machine over one idle second: what others are running. */
async function backgroundLoad(): Promise<number> {
  const b0 = machineBusyNs();
  const t0 = process.hrtime.bigint();
  await sleep(1000);
  return (machineBusyNs() - b0) / Number(process.hrtime.bigint() - t0);
}

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  if (process.getuid?.() !== 0) {
    log('needs root (BPF, sysctls, tracefs, apt-get)');
    return 77;
  }
  const t0 = Date.now();
  const restorer = new Restorer();
  const bail = (signal: NodeJS.Signals): void => {
    log(`${signal}: cleaning up`);
    killAll();
    restorer.restore();
    process.exit(130);
  };
  process.once('SIGINT', bail);
  process.once('SIGTERM', bail);
  process.once('exit', killAll);

  try {
    const busyBefore = await backgroundLoad();
    if (busyBefore > 0.2) log(`the machine is already busy (${busyBefore.toFixed(2)} CPUs used by others): figures will be noisy`);
    const peers = ensurePeers(log);
    for (const needed of ['gcc', 'bpftool']) if (!peers.has(needed)) throw new Error(`${needed} is required and could not be installed`);
    const ctx = tracerContext(peers);
    const gcc = peers.get('gcc')!;
    const churn = buildC(gcc, 'churn');
    const closewait = buildC(gcc, 'closewait');
    disableBpfStats(restorer); // on only for the overhead section, which reads it
    const tracefs = TRACERS.some((t) => t.needsTracefs) ? ensureTracefs(restorer) : true;

    const sections: Array<{ heading: string; tables: Table[] }> = [];
    const caveats: string[] = [];
    const show = (heading: string, tables: Table[]): void => {
      sections.push({ heading, tables });
      for (const t of tables) process.stdout.write(`${renderText(t)}\n`);
    };

    // Before any section leaves sockets behind: a snapshot's start-up, not its scan.
    if (args.startup) {
      const gnuTime = peers.get('time');
      if (!gnuTime) throw new Error('GNU time is required and could not be installed');
      show('Start-up', [await runStartup({ cli: ctx.cli, node: ctx.node, gnuTime, reps: args.quick ? 10 : 30, log })]);
    }

    // First: the churns of the overhead section leave up to 131k TIME_WAIT
    // sockets for a minute, which every walk of the established hash passes (ss's sock_diag
    // dump and sockleak's census).
    if (args.snapshot) {
      const sizes: SnapshotSize[] = args.quick
        ? [{ sockets: 10_000, holders: 50 }]
        : [
            { sockets: 10_000, holders: 50 },
            { sockets: 100_000, holders: 100 },
          ];
      const reps = args.quick ? 3 : 5;
      const results = await runSnapshot({ closewait, sizes, reps, destinations: 10, ctx, peers, restorer, log });
      show('Snapshot of CLOSE_WAIT sockets', [snapshotTable(results, reps)]);
    }

    if (args.overhead) {
      enableBpfStats(restorer);
      const result = await runOverhead({
        churn,
        bpftool: peers.get('bpftool')!,
        setpriv: peers.get('setpriv'),
        connections: args.connections,
        threads: 2,
        reps: args.reps,
        // (the floor row always: the other rows' above-floor figures need it)
        tracers: args.only ? TRACERS.filter((t) => t.floor || args.only!.some((name) => t.name.includes(name))) : TRACERS,
        ctx,
        peers,
        tracefs,
        log,
      });
      disableBpfStats(restorer);
      show('Tracing overhead', overheadTables(result));
      const b = background(result);
      if (b.otherCpus > 0.2 || b.otherBpfNsPerConn > 1000) {
        caveats.push(
          `This run shared the machine with other work: ${b.otherCpus.toFixed(2)} CPUs busy with it and ` +
            `${Math.round(b.otherBpfNsPerConn)} ns/conn of other BPF programs during the churns (medians). ` +
            'The churn CPU and base figures are inflated by it; compare rows with each other, and re-run on a quiet machine for absolute figures.',
        );
        log(`caveat: ${caveats[caveats.length - 1]}`);
      }
    }

    if (args.agent) {
      // Last: it makes and holds 200k sockets, and restores the sysctls it changed when done.
      const tables = await runAgentRss({ sizes: [100_000, 200_000], churnConnections: args.connections, settleSeconds: 30, log });
      show('Agent memory and CPU with leaked sockets held (details: docs/agent.md)', tables);
    }

    if (args.write) {
      const versions: Record<string, string> = {};
      for (const tool of ['libbpf-tools', 'bpftrace', 'iproute2', 'lsof', 'gcc']) {
        versions[tool] = packageVersion({ 'libbpf-tools': 'tcpstates', iproute2: 'ss' }[tool] ?? tool);
      }
      const report = renderReport({
        machine: machineInfo(),
        versions,
        command: `npm run bench${argv.length ? ` -- ${argv.join(' ')}` : ''}`,
        durationS: (Date.now() - t0) / 1000,
        backgroundCpus: busyBefore,
        caveats,
        sections,
        kept: fs.existsSync(args.out) ? keptPart(fs.readFileSync(args.out, 'utf8')) : '',
      });
      fs.mkdirSync(path.dirname(args.out), { recursive: true });
      fs.writeFileSync(args.out, report);
      log(`wrote ${path.relative(process.cwd(), args.out) || args.out}`);
    }
    log(`done in ${Math.round((Date.now() - t0) / 1000)} s`);
    return 0;
  } finally {
    killAll();
    restorer.restore();
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    log(err instanceof Error ? err.message : String(err));
    process.exitCode = 1;
  },
);
