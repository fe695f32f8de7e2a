/**
 * A real Prometheus (Debian's `prometheus` package, which scripts/setup.sh
 * installs) for the tests and for scripts/render-agent-metrics.mjs: started on
 * an ephemeral 127.0.0.1 port with its storage in a temp dir, fed the repo's
 * deploy/prometheus/ files, queried through its HTTP API. Also `promtool`, and
 * an agent run as the CLI, as operators run it.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { CLI, ROOT, sleep, startAgentProcess, type AgentProcess } from './helpers';

export const PROMETHEUS_DIR = path.join(ROOT, 'deploy', 'prometheus');
export const RULES = path.join(PROMETHEUS_DIR, 'sockleak.rules.yml');
export const DASHBOARD = path.join(ROOT, 'deploy', 'grafana', 'sockleak.json');

const MISSING = 'not installed: scripts/setup.sh installs Debian\'s prometheus package (prometheus, promtool)';

/** Runs promtool to completion; throws one line if it is not installed. */
export function promtool(args: string[], input?: string): { code: number | null; out: string } {
  const r = spawnSync('promtool', args, { encoding: 'utf8', input, timeout: 60_000 });
  if (r.error) throw new Error(`promtool ${(r.error as NodeJS.ErrnoException).code === 'ENOENT' ? MISSING : r.error.message}`);
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

/** GET `url`, the body as text. */
export function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
  });
}

/** One series of an instant vector. */
export interface Sample {
  metric: Record<string, string>;
  value: number;
}

/** One series of a range query: [unix seconds, value] points. */
export interface RangeSeries {
  metric: Record<string, string>;
  points: Array<[number, number]>;
}

/** An alert as /api/v1/alerts lists it. */
export interface ActiveAlert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  state: 'pending' | 'firing';
  value: number;
}

interface ApiAnswer<T> {
  status: 'success' | 'error';
  data: T;
  error?: string;
  errorType?: string;
}

/** A client of Prometheus's HTTP API at `base`. */
export class PrometheusApi {
  constructor(readonly base: string) {}

  private async call<T>(pathAndQuery: string): Promise<T> {
    const { status, body } = await get(`${this.base}${pathAndQuery}`);
    let answer: ApiAnswer<T>;
    try {
      answer = JSON.parse(body) as ApiAnswer<T>;
    } catch {
      throw new Error(`${pathAndQuery}: HTTP ${status}: ${body.slice(0, 200)}`);
    }
    if (answer.status !== 'success') throw new Error(`${pathAndQuery}: ${answer.errorType}: ${answer.error}`);
    return answer.data;
  }

  /** An instant query; throws Prometheus's error (a bad expression, say). */
  async query(expr: string): Promise<Sample[]> {
    const data = await this.call<{ resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> | [number, string] }>(
      `/api/v1/query?query=${encodeURIComponent(expr)}`,
    );
    if (data.resultType === 'scalar') return [{ metric: {}, value: Number((data.result as [number, string])[1]) }];
    return (data.result as Array<{ metric: Record<string, string>; value: [number, string] }>).map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
  }

  /** A range query from `start` to `end` (unix seconds) every `step` seconds. */
  async queryRange(expr: string, start: number, end: number, step: number): Promise<RangeSeries[]> {
    const data = await this.call<{ result: Array<{ metric: Record<string, string>; values: Array<[number, string]> }> }>(
      `/api/v1/query_range?query=${encodeURIComponent(expr)}&start=${start}&end=${end}&step=${step}`,
    );
    return data.result.map((r) => ({ metric: r.metric, points: r.values.map(([t, v]) => [t, Number(v)] as [number, number]) }));
  }

  async alerts(): Promise<ActiveAlert[]> {
    const data = await this.call<{ alerts: Array<Omit<ActiveAlert, 'value'> & { value: string }> }>('/api/v1/alerts');
    return data.alerts.map((a) => ({ ...a, value: Number(a.value) }));
  }

  /** Health of every scrape target. */
  async targets(): Promise<Array<{ scrapeUrl: string; health: string; lastError: string }>> {
    return (await this.call<{ activeTargets: Array<{ scrapeUrl: string; health: string; lastError: string }> }>('/api/v1/targets')).activeTargets;
  }
}

/** A running Prometheus; stop() kills it and removes its storage. */
export interface PrometheusServer extends PrometheusApi {
  readonly dir: string;
  stop(): Promise<void>;
}

/** The repo's deploy/prometheus/prometheus.yml, scraping `target` every `intervalS` with `rulesPath` as its only rule file. */
export function deriveConfig(target: string, rulesPath: string, intervalS: number): string {
  let text = readFileSync(path.join(PROMETHEUS_DIR, 'prometheus.yml'), 'utf8');
  const swaps: Array<[RegExp, string]> = [
    [/^(\s*scrape_interval:) 15s$/m, `$1 ${intervalS}s`],
    [/^(\s*evaluation_interval:) 15s$/m, `$1 ${intervalS}s`],
    [/^(\s*- )sockleak\.rules\.yml$/m, `$1${JSON.stringify(rulesPath)}`],
    [/'127\.0\.0\.1:9466'/, `'${target}'`],
  ];
  for (const [pattern, replacement] of swaps) {
    if (!pattern.test(text)) throw new Error(`deploy/prometheus/prometheus.yml no longer matches ${pattern}: update the test's derivation`);
    text = text.replace(pattern, replacement);
  }
  return text;
}

/**
 * The repo's rules with every `for:` cut to `forS` seconds, so that an alert
 * can fire within a test: the expressions are the repo's, unchanged.
 */
export function shortenedRules(forS: number): string {
  const text = readFileSync(RULES, 'utf8');
  const cut = text.replace(/^(\s+for:) \S+$/gm, `$1 ${forS}s`);
  if (cut === text) throw new Error(`${RULES} has no 'for:' left to shorten`);
  return cut;
}

/** A port that was free a moment ago (Prometheus binds it itself; a lost race is retried). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Starts Prometheus with `configText` (written to its temp dir) on 127.0.0.1; resolves once it is ready. */
export async function startPrometheus(configText: string, files: Record<string, string> = {}): Promise<PrometheusServer> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sockleak-prometheus-'));
  const config = path.join(dir, 'prometheus.yml');
  writeFileSync(config, configText);
  for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, name), text);
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const child = spawn(
      'prometheus',
      [`--config.file=${config}`, `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let log = '';
    child.stderr.on('data', (d: Buffer) => (log += d.toString()));
    const spawned = await new Promise<Error | undefined>((resolve) => child.once('spawn', () => resolve(undefined)).once('error', resolve));
    if (spawned) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`prometheus ${(spawned as NodeJS.ErrnoException).code === 'ENOENT' ? MISSING : spawned.message}`);
    }
    const base = `http://127.0.0.1:${port}`;
    const ready = await waitReady(base, child);
    if (ready) return server(base, dir, child);
    if (attempt < 3 && /address already in use/.test(log)) continue; // someone took the port between freePort() and the bind
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`prometheus did not start: ${log.trim().split('\n').slice(-3).join(' | ')}`);
  }
}

async function waitReady(base: string, child: ChildProcess): Promise<boolean> {
  for (const until = Date.now() + 30_000; Date.now() < until && child.exitCode === null; await sleep(100)) {
    try {
      if ((await get(`${base}/-/ready`)).status === 200) return true;
    } catch {
      // not listening yet
    }
  }
  return false;
}

function server(base: string, dir: string, child: ChildProcess): PrometheusServer {
  const api = new PrometheusApi(base) as PrometheusServer;
  Object.assign(api, {
    dir,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  });
  return api;
}

/** `sockleak agent` on an ephemeral loopback port, as operators run it. */
export function startAgentCli(args: string[]): Promise<AgentProcess> {
  return startAgentProcess(['--listen', '127.0.0.1:0', ...args]);
}

/**
 * Metric names a PromQL expression reads: what is left once strings, label
 * matchers, ranges, grouping clauses, function calls, keywords and numbers are
 * taken out.
 */
export function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\boffset\s+\S+/g, ' ');
  const keywords = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'inf', 'nan', 'offset']);
  const names = new Set<string>();
  // Numbers first (a number such as 1e3 holds a word), then names; a name followed by '(' is a function.
  for (const m of stripped.matchAll(/[0-9][A-Za-z0-9_.]*|([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?/g)) {
    const word = m[1];
    if (word === undefined || m[2] !== undefined || keywords.has(word.toLowerCase())) continue;
    names.add(word);
  }
  return [...names];
}
