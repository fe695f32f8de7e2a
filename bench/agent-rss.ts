/**
 * `node dist/bench/agent-rss.js [--sockets 100000,200000] [--churn 100000] [--settle 30] [--write]`:
 * memory and CPU of `sockleak agent` with many leaked sockets and under
 * loopback churn, next to the untraced baseline of the same run. Needs root.
 *
 * Per size K: K CLOSE_WAIT sockets over ceil(K/18000) holder processes (the
 * open-file limit is 20000 a process), made before the agent starts (the
 * restart case: its start-up snapshot and the engine's seeding find them);
 * then the agent's RSS and CPU while it reports them, over a settled window,
 * and while bench/churn.c runs. The untraced churn runs first, with no agent.
 * Everything started here is ended here (bench/children.ts), also on failure;
 * the port range, if widened, is restored.
 *
 * Entry point for the bench harness: runAgentRss() returns the tables.
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { buildC, ROOT } from './build-c';
import { collect, JsonLines, killAll, sleep, start, stop } from './children';
import { machineBusyNs, machineInfo, processCpuNs, readSysctl, Restorer } from './system';
import { fmtFixed, fmtInt, fmtPercent, renderMarkdown, renderText, type Table } from './table';

export interface AgentRssOptions {
  sizes: number[];
  churnConnections: number;
  settleSeconds: number;
  log(line: string): void;
}

interface ChurnReport {
  connections: number;
  failed: number;
  wallNs: number;
  userNs: number;
  sysNs: number;
}

interface Running {
  pid: number;
  base: string;
  stop(): Promise<number | string>;
  stderr(): string;
  alive(): boolean;
}

const CLI = path.join(ROOT, 'bin', 'sockleak.js');
const PER_HOLDER = 18_000;
const DESTINATIONS = 32;

const rssKb = (pid: number, field = 'VmRSS'): number =>
  Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);

function get(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent: false }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
}

const metric = (text: string, name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);

async function startAgent(record: string, log: (l: string) => void): Promise<Running> {
  const child = start(CLI, ['agent', '--listen', '127.0.0.1:0', '--threshold', '5s', '--record', record], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const stderr = collect(child.stderr);
  const until = Date.now() + 120_000;
  while (!/agent on http/.test(stderr())) {
    if (child.exitCode !== null || Date.now() > until) throw new Error(`agent did not start: ${stderr()}`);
    await sleep(100);
  }
  const base = /agent on (http:\/\/\S+) /.exec(stderr())![1]!;
  log(`agent pid ${child.pid} on ${base}`);
  return { pid: child.pid!, base, stop: () => stop(child, 'SIGTERM', 60_000), stderr, alive: () => child.exitCode === null && child.signalCode === null };
}

/** K CLOSE_WAIT sockets, held until cleanup(). */
async function makeLeaks(closewait: string, sockets: number, restorer: Restorer): Promise<{ cleanup(): Promise<void> }> {
  const children: ReturnType<typeof start>[] = [];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockleak-agent-bench-'));
  const cleanup = async (): Promise<void> => {
    await Promise.all(children.map((c) => stop(c, 'SIGKILL', 5000)));
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    const perDest = Math.ceil(sockets / DESTINATIONS);
    const [lo, hi] = readSysctl('net.ipv4.ip_local_port_range').split(/\s+/).map(Number) as [number, number];
    if (hi - lo + 1 < 3 * perDest) restorer.setSysctl('net.ipv4.ip_local_port_range', `${Math.min(lo, 10000)} ${Math.max(hi, 65000)}`);
    const addrs = Array.from({ length: DESTINATIONS }, (_, i) => `127.0.3.${i + 1}`);
    const listener = start(closewait, ['listen', String(sockets), ...addrs], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(listener);
    const lines = new JsonLines(listener);
    const { listeners } = await lines.next<{ listeners: string[] }>(10_000, 'closewait listen');
    const holders = Math.ceil(sockets / PER_HOLDER);
    const held = await Promise.all(
      Array.from({ length: holders }, (_, i) => {
        const count = i < holders - 1 ? PER_HOLDER : sockets - PER_HOLDER * (holders - 1);
        const h = start(closewait, ['hold', String(count), path.join(dir, `truth.${i}`), ...listeners], { stdio: ['ignore', 'pipe', 'inherit'] });
        children.push(h);
        return new JsonLines(h).next<{ held: number; failed: number }>(600_000, 'closewait hold');
      }),
    );
    const total = held.reduce((n, h) => n + h.held, 0);
    if (total !== sockets) throw new Error(`only ${total} of ${sockets} sockets made`);
    await lines.next(120_000, 'closewait listen (closed)');
    await sleep(1000);
    return { cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

async function runChurn(churn: string, connections: number): Promise<ChurnReport> {
  const child = start(churn, [String(connections), '2'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const report = await new JsonLines(child).next<ChurnReport>(600_000, 'churn');
  if (report.failed) throw new Error(`churn: ${report.failed} connections failed`);
  return report;
}

/** CPU share of `pid` (cores) and the machine's busy share over `ms`. */
async function cpuOver(pid: number, ms: number, during?: Promise<unknown>): Promise<{ cores: number; machine: number; wallMs: number }> {
  const c0 = processCpuNs(pid);
  const m0 = machineBusyNs();
  const t0 = Date.now();
  if (during) await during;
  else await sleep(ms);
  const wallMs = Date.now() - t0;
  return { cores: (processCpuNs(pid) - c0) / 1e6 / wallMs, machine: (machineBusyNs() - m0) / 1e6 / wallMs, wallMs };
}

interface SizeResult {
  sockets: number;
  reportedMs: number;
  tracked: number;
  rssSettledMb: number;
  rssPeakMb: number;
  cpuSettled: number;
  /** The same churn with the K leaks held but no agent: the untraced baseline of this size. */
  churnUntraced: ChurnReport;
  churn: ChurnReport;
  cpuChurn: number;
  recordBytes: number;
  mapFull: number;
  machineBusy: number;
}

async function runSize(k: number, tools: { closewait: string; churn: string }, o: AgentRssOptions, restorer: Restorer): Promise<SizeResult> {
  o.log(`${fmtInt(k)}: making CLOSE_WAIT sockets`);
  const leaks = await makeLeaks(tools.closewait, k, restorer);
  o.log(`${fmtInt(k)}: churn with the leaks held, no agent`);
  const churnUntraced = await runChurn(tools.churn, o.churnConnections);
  const record = path.join(os.tmpdir(), `sockleak-agent-bench-${process.pid}.rec`);
  try {
    const t0 = Date.now();
    const agent = await startAgent(record, o.log);
    let text = '';
    // All reported: K, or (a few of the holders' sockets can be reset) 99% of K and no change for 5 s.
    let last = -1;
    let sameSince = Date.now();
    const done = (): boolean => {
      const n = metric(text, 'sockleak_close_wait_leaked_sockets');
      if (n !== last) [last, sameSince] = [n, Date.now()];
      return n >= k || (n >= 0.99 * k && Date.now() - sameSince >= 5000);
    };
    while (!done()) {
      if (Date.now() - t0 > 600_000) throw new Error(`agent reported only ${metric(text, 'sockleak_close_wait_leaked_sockets')} of ${k}`);
      await sleep(1000);
      try {
        text = await get(`${agent.base}/metrics`);
      } catch (err) {
        if (!agent.alive()) throw new Error(`agent died: ${agent.stderr()}`);
        o.log(`/metrics: ${(err as Error).message}`);
      }
    }
    const reportedMs = Date.now() - t0;
    o.log(`${fmtInt(k)}: all reported after ${reportedMs} ms; settling ${o.settleSeconds} s`);
    const rss: number[] = [];
    const settled = cpuOver(agent.pid, o.settleSeconds * 1000);
    for (let i = 0; i < o.settleSeconds; i++) {
      await sleep(1000);
      rss.push(rssKb(agent.pid));
    }
    const cpu = await settled;
    o.log(`${fmtInt(k)}: churn with the agent running`);
    const churnRun = runChurn(tools.churn, o.churnConnections);
    const during = await cpuOver(agent.pid, 0, churnRun);
    const churn = await churnRun;
    text = await get(`${agent.base}/metrics`);
    const result: SizeResult = {
      sockets: k,
      reportedMs,
      tracked: metric(text, 'sockleak_close_wait_leaked_sockets'),
      rssSettledMb: rss[rss.length - 1]! / 1024,
      rssPeakMb: rssKb(agent.pid, 'VmHWM') / 1024,
      cpuSettled: cpu.cores,
      churnUntraced,
      churn,
      cpuChurn: during.cores,
      recordBytes: metric(text, 'sockleak_recording_bytes_total'),
      mapFull: metric(text, 'sockleak_map_full_total'),
      machineBusy: cpu.machine,
    };
    const how = await agent.stop();
    if (how !== 0) o.log(`agent exited ${how}: ${agent.stderr()}`);
    return result;
  } finally {
    fs.rmSync(record, { force: true });
    await leaks.cleanup();
  }
}

/** Runs the whole benchmark; returns its tables. */
export async function runAgentRss(o: AgentRssOptions, restorer = new Restorer()): Promise<Table[]> {
  const tools = { closewait: buildC('gcc', 'closewait'), churn: buildC('gcc', 'churn') };
  try {
    o.log('untraced churn (no agent)');
    const base = await runChurn(tools.churn, o.churnConnections);
    o.log('agent idle');
    const idleRecord = path.join(os.tmpdir(), `sockleak-agent-bench-idle-${process.pid}.rec`);
    const idle = await startAgent(idleRecord, o.log);
    await sleep(5000);
    const idleCpu = await cpuOver(idle.pid, 10_000);
    const idleRss = rssKb(idle.pid) / 1024;
    await idle.stop();
    fs.rmSync(idleRecord, { force: true });
    const sizes: SizeResult[] = [];
    for (const k of o.sizes) sizes.push(await runSize(k, tools, o, restorer));

    const rate = (c: ChurnReport): number => c.connections / (c.wallNs / 1e9);
    const usPerConn = (c: ChurnReport): number => (c.userNs + c.sysNs) / 1e3 / c.connections;
    const memory: Table = {
      title: 'sockleak agent: memory and CPU with K leaked sockets (made before it starts)',
      headers: ['K leaks', 'tracked', 'all reported after', 'RSS settled', 'RSS peak', 'agent CPU settled', 'agent CPU during churn', 'recorded', 'map-full'],
      numeric: [true, true, true, true, true, true, true, true, true],
      rows: [
        ['0 (idle)', '—', '—', `${fmtFixed(idleRss, 0)} MB`, '—', fmtPercent(idleCpu.cores), '—', '—', '—'],
        ...sizes.map((s) => [
          fmtInt(s.sockets),
          fmtInt(s.tracked),
          `${fmtFixed(s.reportedMs / 1000, 1)} s`,
          `${fmtFixed(s.rssSettledMb, 0)} MB`,
          `${fmtFixed(s.rssPeakMb, 0)} MB`,
          fmtPercent(s.cpuSettled),
          fmtPercent(s.cpuChurn),
          `${fmtFixed(s.recordBytes / 2 ** 20, 1)} MiB`,
          fmtInt(s.mapFull),
        ]),
      ],
      notes: [
        'RSS settled: VmRSS after the settle window; peak: VmHWM. CPU: the agent\'s utime+stime over the window, in cores.',
        `Threshold 5 s, --record on, default interval (15 s); ${o.settleSeconds} s settle window.`,
        ...sizes.map((s) => `${fmtInt(s.sockets)}: the machine was ${fmtFixed(s.machineBusy, 2)} CPUs busy during the settle window (all processes).`),
      ],
    };
    const churn: Table = {
      title: `Loopback churn (bench/churn.c, ${fmtInt(o.churnConnections)} connections, 2 threads) with and without the agent`,
      headers: ['run', 'connections/s', 'churn CPU µs/conn', 'agent CPU'],
      numeric: [false, true, true, true],
      rows: [
        ['untraced, no leaks held', fmtInt(rate(base)), fmtFixed(usPerConn(base), 1), '—'],
        ...sizes.flatMap((s) => [
          [`untraced, ${fmtInt(s.sockets)} leaks held`, fmtInt(rate(s.churnUntraced)), fmtFixed(usPerConn(s.churnUntraced), 1), '—'],
          [`agent, ${fmtInt(s.sockets)} leaks held`, fmtInt(rate(s.churn)), fmtFixed(usPerConn(s.churn), 1), fmtPercent(s.cpuChurn)],
        ]),
      ],
      notes: [
        'Churn CPU includes the BPF programs that run in its context (getrusage of the churn process).',
        'Leaks held slow connect() by themselves (their ports are taken): compare each agent row with the untraced row of the same size.',
        'On 2 CPUs the agent\'s own CPU competes with the churn\'s 3 threads: connections/s falls by more than the per-connection cost rises.',
      ],
    };
    return [memory, churn];
  } finally {
    restorer.restore();
  }
}

function parseArgs(argv: string[]): AgentRssOptions & { write: boolean } {
  const o = { sizes: [100_000, 200_000], churnConnections: 100_000, settleSeconds: 30, write: false, log: (l: string) => process.stderr.write(`bench: ${l}\n`) };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = (): string => argv[++i] ?? '';
    if (a === '--sockets') o.sizes = value().split(',').map(Number);
    else if (a === '--churn') o.churnConnections = Number(value());
    else if (a === '--settle') o.settleSeconds = Number(value());
    else if (a === '--write') o.write = true;
    else throw new Error(`unknown argument ${a}; usage: agent-rss [--sockets 100000,200000] [--churn N] [--settle S] [--write]`);
  }
  if (o.sizes.some((n) => !Number.isInteger(n) || n < 1) || !(o.churnConnections > 0) || !(o.settleSeconds > 0)) throw new Error('bad numbers');
  return o;
}

/** Replaces the block between the bench markers in docs/agent.md. */
function writeDocs(tables: Table[]): void {
  const file = path.join(ROOT, 'docs', 'agent.md');
  const text = fs.readFileSync(file, 'utf8');
  const m = machineInfo();
  const block = [
    '<!-- bench:agent-rss:start -->',
    `Measured ${m.date} on ${m.cpuModel} (${m.nproc} CPUs, ${m.memGiB} GiB), ${m.os}, kernel ${m.kernel}, Node ${m.node}, with \`node dist/bench/agent-rss.js --write\`.`,
    '',
    ...tables.map(renderMarkdown),
    '<!-- bench:agent-rss:end -->',
  ].join('\n');
  const replaced = text.replace(/<!-- bench:agent-rss:start -->[\s\S]*<!-- bench:agent-rss:end -->/, block);
  if (replaced === text) throw new Error('docs/agent.md has no bench:agent-rss markers');
  fs.writeFileSync(file, replaced);
}

if (require.main === module) {
  const restorer = new Restorer();
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      restorer.restore();
      process.exit(130);
    });
  }
  (async () => {
    const o = parseArgs(process.argv.slice(2));
    const tables = await runAgentRss(o, restorer);
    for (const t of tables) process.stdout.write(`${renderText(t)}\n`);
    if (o.write) writeDocs(tables);
  })().catch((err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
