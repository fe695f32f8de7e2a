#!/usr/bin/env node
// Renders docs/img/agent-leaks.svg: sockleak's leak metrics as Prometheus stored them, read back
// through its query_range API. By default it makes the run itself: a sockleak agent, a Prometheus
// scraping it every second (deploy/prometheus/prometheus.yml and the repo's rules), and incident 1
// in miniature: a client whose W worker threads each connect to every backend and never prune a
// connection; backends are deleted one after another, then the client restarts.
// With --prometheus URL it reads a Prometheus that already scrapes agents instead (the last
// --minutes, the --top processes), and makes nothing.
//
// usage, as root after scripts/setup.sh (Prometheus from Debian's package) and `npm run build:ts`:
//   node scripts/render-agent-metrics.mjs [--threads 8] [--backends 4] [--every 12] [--out docs/img/agent-leaks.svg]
//   node scripts/render-agent-metrics.mjs --prometheus http://127.0.0.1:9090 [--minutes 60] [--top 8]
// Exit codes: 64 bad arguments, 69 Prometheus or the build missing, 70 the run failed.
import { existsSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { lineChart } from './svg-chart.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

class Failure extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

const stops = []; // what this script started, stopped last-first on any exit
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

try {
  process.exitCode = await main();
} catch (err) {
  console.error(`render-agent-metrics: ${err instanceof Failure ? err.message : err.stack}`);
  process.exitCode = err instanceof Failure ? err.code : 70;
} finally {
  for (const stop of stops.reverse()) await stop().catch(() => undefined);
}

function options() {
  try {
    const { values } = parseArgs({
      options: {
        threads: { type: 'string', default: '8' },
        backends: { type: 'string', default: '4' },
        every: { type: 'string', default: '12' },
        prometheus: { type: 'string' },
        minutes: { type: 'string', default: '60' },
        top: { type: 'string', default: '8' },
        out: { type: 'string', default: path.join(ROOT, 'docs', 'img', 'agent-leaks.svg') },
      },
    });
    const count = (name, min, max) => {
      const n = Number(values[name]);
      if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} must be an integer in ${min}..${max}, got '${values[name]}'`);
      return n;
    };
    return {
      threads: count('threads', 1, 256),
      backends: count('backends', 2, 20),
      every: count('every', 3, 600),
      minutes: count('minutes', 1, 7 * 24 * 60),
      top: count('top', 1, 20),
      prometheus: values.prometheus,
      out: path.resolve(values.out),
    };
  } catch (err) {
    throw new Failure(err.message, 64);
  }
}

/** The tests' harness (compiled): Prometheus, promtool, the agent CLI, the holder and backends. */
function harness() {
  const built = path.join(ROOT, 'dist', 'test', 'prometheus-server.js');
  if (!existsSync(built)) throw new Failure(`${path.relative(ROOT, built)} is missing: run 'npm run build:ts' first`, 69);
  return { ...require(built), ...require(path.join(ROOT, 'dist', 'test', 'helpers.js')) };
}

async function main() {
  const o = options();
  const h = harness();
  const chart = o.prometheus ? await fromRunning(h, o) : await fromRun(h, o);
  writeFileSync(o.out, chart);
  console.error(`render-agent-metrics: wrote ${path.relative(process.cwd(), o.out)}`);
  return 0;
}

const comm = (m) => (m.comm ? ` (${m.comm})` : '');

/** Reads the last --minutes of a Prometheus that already scrapes agents. */
async function fromRunning(h, o) {
  const api = new h.PrometheusApi(o.prometheus.replace(/\/$/, ''));
  const end = Math.floor(Date.now() / 1000);
  const start = end - o.minutes * 60;
  const step = Math.max(1, Math.ceil((end - start) / 600));
  const perProcess = `topk(${o.top}, sockleak_process_close_wait_leaked_sockets{pid!="other"} * on (instance, job, pid) group_left (comm) sockleak_process_info)`;
  let series;
  try {
    series = [
      ...(await api.queryRange('sum(sockleak_close_wait_leaked_sockets)', start, end, step)).map((s) => ({ name: 'all leaked sockets', points: s.points, step: true })),
      ...(await api.queryRange(perProcess, start, end, step)).map((s) => ({ name: `${s.metric.instance} pid ${s.metric.pid}${comm(s.metric)}`, points: s.points, step: true })),
    ];
  } catch (err) {
    throw new Failure(`${o.prometheus}: ${err.message}`, 69);
  }
  return lineChart({ title: `Leaked CLOSE_WAIT sockets, last ${o.minutes} min (Prometheus ${o.prometheus})`, yLabel: 'leaked sockets', series, width: 900, height: 420 });
}

/** Makes the run: agent, Prometheus, incident 1 in miniature; reads it back from Prometheus. */
async function fromRun(h, o) {
  if (process.getuid?.() !== 0) throw new Failure('the agent needs root (BPF): run as root, or read a running Prometheus with --prometheus URL', 77);
  let agent;
  let prometheus;
  try {
    agent = await h.startAgentCli(['--threshold', '2s', '--interval', '1s', '--top', '1000']);
    stops.push(() => agent.stop());
    prometheus = await h.startPrometheus(h.deriveConfig(agent.target, 'sockleak.rules.yml', 1), { 'sockleak.rules.yml': h.shortenedRules(2) });
    stops.push(() => prometheus.stop());
  } catch (err) {
    throw new Failure(err.message, /not installed/.test(err.message) ? 69 : 70);
  }
  const hosts = Array.from({ length: o.backends }, (_, i) => `127.0.9.${31 + i}`);
  const backends = await Promise.all(hosts.map(h.startBackend));
  stops.push(() => Promise.all(backends.map((b) => b.remove().catch(() => undefined))));
  const markers = [];
  const mark = (label) => markers.push({ at: Date.now() / 1000, label });
  const client = async () => {
    const holder = await h.startHolder();
    stops.push(async () => holder.kill());
    const live = backends.filter((b) => !b.removed);
    await holder.request({ op: 'threads', count: o.threads, targets: live.map((b) => [b.host, b.port]) });
    return holder;
  };

  const t0 = Date.now() / 1000;
  console.error(`render-agent-metrics: agent ${agent.base}, prometheus ${prometheus.base}; ${o.threads} threads x ${o.backends} backends, one deleted every ${o.every} s`);
  let holder = await client();
  await sleep(o.every * 1000);
  // Delete all backends but one, one per period, as the name service did each night.
  for (const b of backends.slice(0, -1)) {
    await b.remove();
    b.removed = true;
    mark(`${b.host} deleted`);
    await sleep(o.every * 1000);
  }
  holder.kill();
  mark('client restarted');
  holder = await client();
  await sleep(o.every * 1000);
  const t1 = Date.now() / 1000;

  const remotes = backends.map((b) => b.remote.replace(/\./g, '\\\\.')).join('|');
  const byRemote = await prometheus.queryRange(`sockleak_remote_close_wait_leaked_sockets{remote=~"${remotes}"}`, Math.floor(t0), Math.ceil(t1), 1);
  // `or vector(0)`: the line starts before the first leak and falls to 0 when they all go.
  const total = await prometheus.queryRange(`sum(sockleak_remote_close_wait_leaked_sockets{remote=~"${remotes}"}) or vector(0)`, Math.floor(t0), Math.ceil(t1), 1);
  if (byRemote.length === 0) throw new Failure('Prometheus holds no leak series for the run: see the agent and Prometheus logs', 70);
  const series = [
    ...total.map((s) => ({ name: 'the client, all backends', points: s.points, step: true })),
    ...byRemote.sort((a, b) => (a.metric.remote < b.metric.remote ? -1 : 1)).map((s) => ({ name: `to ${s.metric.remote}`, points: s.points, step: true })),
  ];
  return lineChart({
    title: `Leaked CLOSE_WAIT sockets in Prometheus: ${o.threads} client threads × ${o.backends} backends, deleted one by one`,
    yLabel: 'leaked sockets',
    series,
    markers,
    width: 900,
    height: 420,
  });
}
