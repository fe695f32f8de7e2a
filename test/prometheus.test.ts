/**
 * A real Prometheus scraping a real agent: the first incident in miniature
 * (W client threads x 3 backends, one backend removed) must show up in
 * Prometheus, queried with PromQL, as exactly the holder's own count; the
 * repo's CLOSE_WAIT alert rule must fire for that pid (its `for:` shortened in a
 * copy, its expression unchanged), and stop when the process is gone; the
 * agent's /metrics must pass `promtool check metrics`; every expression of the
 * Grafana dashboard must be accepted by Prometheus and read only metrics the
 * agent exports or the rules record.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { startBackend, startHolder, sleep, type AgentProcess, type Backend, type Holder } from './helpers';
import {
  DASHBOARD,
  RULES,
  deriveConfig,
  get,
  metricNames,
  promtool,
  shortenedRules,
  startAgentCli,
  startPrometheus,

  type PrometheusServer,
  type Sample,
} from './prometheus-server';

const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** Polls `read` until `done` holds; fails with the last value otherwise. */
async function until<T>(what: string, read: () => Promise<T>, done: (value: T) => boolean, timeoutMs = 30_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}; last: ${JSON.stringify(value)}`);
    await sleep(250);
  }
}

const valueOf = (samples: Sample[], labels: Record<string, string>): number | undefined =>
  samples.find((s) => Object.entries(labels).every(([k, v]) => s.metric[k] === v))?.value;

/** Names the agent exports (families of its text format, with a histogram's series), and those the rules record. */
function knownNames(metricsText: string): Set<string> {
  const names = new Set(['up', 'ALERTS', 'ALERTS_FOR_STATE']);
  for (const m of metricsText.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    names.add(m[1]!);
    if (m[2] === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(m[1]! + s);
    if (m[2] === 'summary') for (const s of ['_sum', '_count']) names.add(m[1]! + s);
  }
  for (const m of readFileSync(RULES, 'utf8').matchAll(/^\s*- record: (\S+)$/gm)) names.add(m[1]!);
  return names;
}

test('Prometheus scrapes the agent: leaks per process equal the truth, the CLOSE_WAIT alert fires and resolves, promtool check metrics, the dashboard queries', { timeout: 120_000 }, async (t) => {
  const W = 12;
  const started = Date.now();
  // --top 1000: other leaks on a shared machine must not push the test's process into "other".
  const agent: AgentProcess = await startAgentCli(['--threshold', '1s', '--interval', '1s', '--top', '1000']);
  cleanups.push(() => agent.stop());
  const prometheus: PrometheusServer = await startPrometheus(deriveConfig(agent.target, 'sockleak.rules.yml', 1), { 'sockleak.rules.yml': shortenedRules(2) });
  cleanups.push(() => prometheus.stop());
  t.diagnostic(`agent ${agent.base}, prometheus ${prometheus.base} (${Date.now() - started} ms)`);

  // Incident 1 in miniature: each of W threads connects to every backend; one backend goes away.
  const backends: Backend[] = await Promise.all(['127.0.9.11', '127.0.9.12', '127.0.9.13'].map(startBackend));
  cleanups.push(() => Promise.all(backends.map((b) => b.remove().catch(() => undefined))));
  const holder: Holder = await startHolder();
  cleanups.push(() => holder.kill());
  const { conns } = await holder.request<{ conns: Array<{ tid: number; fd: number; remote: string }> }>({
    op: 'threads',
    count: W,
    targets: backends.map((b) => [b.host, b.port]),
  });
  const dead = backends[1]!;
  await until('accepts', async () => backends.map((b) => b.accepted.length), (n) => n.every((x) => x === W), 5000);
  await dead.remove();
  const truth = conns.filter((c) => c.remote === dead.remote).length;
  assert.equal(truth, W, 'the holder has one connection per thread to the removed backend');

  // PromQL: leaks per process, comm joined from the info series, as a dashboard would ask.
  const pid = String(holder.pid);
  const perProcess = 'sockleak_process_close_wait_leaked_sockets * on (instance, job, pid) group_left (comm, cgroup) sockleak_process_info';
  const samples = await until(`${truth} leaks for pid ${pid} in Prometheus`, () => prometheus.query(perProcess), (s) => valueOf(s, { pid }) === truth);
  const mine = samples.find((s) => s.metric.pid === pid)!;
  assert.equal(mine.metric.comm, 'python3');
  assert.equal(mine.metric.job, 'sockleak');
  const cgroup = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => l.startsWith('0::'));
  if (cgroup) assert.equal(mine.metric.cgroup, cgroup.slice(3), 'the cgroup v2 path');
  const perRemote = await prometheus.query('sockleak_remote_close_wait_leaked_sockets');
  assert.equal(valueOf(perRemote, { remote: dead.remote }), truth, 'leaks per remote: the removed backend');
  for (const live of [backends[0]!, backends[2]!]) assert.equal(valueOf(perRemote, { remote: live.remote }), undefined, `no leak to ${live.remote}`);
  assert.deepEqual((await prometheus.query('sockleak_close_wait_threshold_seconds')).map((s) => s.value), [1]);
  t.diagnostic(`leaks in Prometheus after ${Date.now() - started} ms`);

  // The repo's rule expression fires for this pid, with its comm and count.
  const alert = await until(
    'SockleakCloseWaitLeak firing',
    () => prometheus.alerts(),
    (as) => as.some((a) => a.labels.alertname === 'SockleakCloseWaitLeak' && a.labels.pid === pid && a.state === 'firing'),
  ).then((as) => as.find((a) => a.labels.alertname === 'SockleakCloseWaitLeak' && a.labels.pid === pid)!);
  assert.equal(alert.labels.comm, 'python3');
  assert.equal(alert.value, truth);
  assert.match(alert.annotations.summary ?? '', new RegExp(`^pid ${pid} \\(python3\\) on .* holds ${truth} leaked CLOSE_WAIT sockets$`));
  const alertsSeries = await prometheus.query(`ALERTS{alertname="SockleakCloseWaitLeak", alertstate="firing", pid="${pid}"}`);
  assert.equal(alertsSeries.length, 1, 'and in ALERTS');
  t.diagnostic(`alert firing after ${Date.now() - started} ms`);

  // promtool check metrics on a real scrape, with the leak's series in it.
  const scrape = await get(`${agent.base}/metrics`);
  assert.match(scrape.body, new RegExp(`^sockleak_process_close_wait_leaked_sockets\\{pid="${pid}"\\} ${truth}$`, 'm'));
  const lint = promtool(['check', 'metrics'], scrape.body);
  assert.equal(lint.code, 0, `promtool check metrics:\n${lint.out}`);
  assert.equal(lint.out.trim(), '', 'no lint findings');

  // Every dashboard expression: accepted by this Prometheus, reading only what the agent exports or the rules record.
  const known = knownNames(scrape.body);
  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
    panels: Array<{ title: string; targets?: Array<{ expr: string }> }>;
    templating: { list: Array<{ name: string; definition?: string }> };
  };
  const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((target) => ({ panel: p.title, expr: target.expr })));
  for (const { panel, expr } of exprs) {
    const promql = expr.replace(/\$__rate_interval/g, '1m').replace(/\$instance/g, '.*');
    await prometheus.query(promql).catch((err: Error) => assert.fail(`${panel}: ${expr}: ${err.message}`));
    for (const name of metricNames(promql)) assert.ok(known.has(name), `${panel}: ${name} is neither exported nor recorded`);
  }
  for (const v of dashboard.templating.list) {
    const m = /^label_values\((\w+), *(\w+)\)$/.exec(v.definition ?? '');
    if (v.definition !== undefined) assert.ok(m && known.has(m[1]!), `variable ${v.name}: ${v.definition}`);
  }
  const panelAnswer = await prometheus.query(exprs.find((e) => e.panel === 'Leaked sockets per process')!.expr.replace(/\$instance/g, '.*'));
  assert.equal(valueOf(panelAnswer, { pid }), truth, 'the dashboard panel shows the truth');

  // The process exits: its series go, and the alert resolves.
  holder.kill();
  await until('the alert to resolve', () => prometheus.alerts(), (as) => !as.some((a) => a.labels.alertname === 'SockleakCloseWaitLeak' && a.labels.pid === pid), 20_000);
  assert.equal(valueOf(await prometheus.query(perProcess), { pid }), undefined);
  const targets = await prometheus.targets();
  assert.ok(targets.every((x) => x.health === 'up'), JSON.stringify(targets));
  assert.equal(await agent.stop(), 0, agent.stderr());
  t.diagnostic(`done after ${Date.now() - started} ms`);
});
