/**
 * deploy/prometheus/ and deploy/grafana/ checked by the real tools: promtool
 * check config / check rules, and promtool test rules running
 * sockleak.rules.test.yml against the rules. The live scrape and alert are in
 * prometheus.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { DASHBOARD, PROMETHEUS_DIR, RULES, metricNames, promtool } from './prometheus-server';

const TESTS = path.join(PROMETHEUS_DIR, 'sockleak.rules.test.yml');
const dir = mkdtempSync(path.join(os.tmpdir(), 'sockleak-rules-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const alertNames = (rules: string): string[] => [...rules.matchAll(/^\s*- alert: (\S+)$/gm)].map((m) => m[1]!);

test('promtool: the example config and the rules are valid', () => {
  const config = promtool(['check', 'config', path.join(PROMETHEUS_DIR, 'prometheus.yml')]);
  assert.equal(config.code, 0, config.out);
  assert.match(config.out, /SUCCESS: 1 rule files found/);
  const rules = promtool(['check', 'rules', RULES]);
  assert.equal(rules.code, 0, rules.out);
});

test('promtool test rules: every alert fires on its case and stays quiet on its near misses', () => {
  const r = promtool(['test', 'rules', TESTS]);
  assert.equal(r.code, 0, r.out);
  const rules = readFileSync(RULES, 'utf8');
  const tests = readFileSync(TESTS, 'utf8');
  const alerts = alertNames(rules);
  assert.ok(alerts.length >= 8, `alerts: ${alerts.join(', ')}`);
  for (const alert of alerts) {
    const cases = [...tests.matchAll(new RegExp(`alertname: ${alert}\\n\\s*exp_alerts:(.*)`, 'g'))].map((m) => m[1]!.trim());
    assert.ok(cases.some((c) => c === ''), `${alert}: a case where it fires`);
    if (alert !== 'SockleakMapFull' && alert !== 'SockleakLeaksEvicted') assert.ok(cases.includes('[]'), `${alert}: a case where it does not`);
  }
  for (const record of rules.matchAll(/^\s*- record: (\S+)$/gm)) assert.ok(tests.includes(`expr: ${record[1]}`), `${record[1]}: a promql_expr_test`);
});

test('promtool test rules fails when a rule changes: a longer `for`, a wrong threshold', () => {
  const rules = readFileSync(RULES, 'utf8');
  const tests = readFileSync(TESTS, 'utf8').replace(/^(\s+- )sockleak\.rules\.yml$/m, `$1${path.join(dir, 'mutant.rules.yml')}`);
  writeFileSync(path.join(dir, 'mutant.test.yml'), tests);
  const mutants: Array<[string, string]> = [
    ['for: 15m', 'for: 30m'],
    ['* 3600 > 10', '* 3600 > 1000'],
    ['{pid!="other"}', '{pid!="4242"}'],
    ['< 3600', '< 36000'],
  ];
  for (const [from, to] of mutants) {
    assert.ok(rules.includes(from), `the rules still contain ${from}`);
    writeFileSync(path.join(dir, 'mutant.rules.yml'), rules.replace(from, to));
    const r = promtool(['test', 'rules', path.join(dir, 'mutant.test.yml')]);
    assert.notEqual(r.code, 0, `${from} -> ${to} went unnoticed:\n${r.out}`);
  }
});

test('grafana dashboard: valid JSON, unique panel ids, every target has a PromQL expression naming sockleak metrics', () => {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { uid: string; panels: Array<{ id: number; type: string; title: string; targets?: Array<{ expr: string }> }> };
  assert.equal(dashboard.uid, 'sockleak');
  const ids = dashboard.panels.map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length, 'unique panel ids');
  const exprs = dashboard.panels.flatMap((p) => (p.type === 'row' ? [] : (p.targets ?? []).map((t) => t.expr)));
  assert.ok(exprs.length >= 15, `${exprs.length} expressions`);
  for (const expr of exprs) assert.ok(metricNames(expr).some((n) => /^(?:\w+:)?sockleak_|^up$|^ALERTS$|^process_/.test(n)), `reads a sockleak metric: ${expr}`);
  // The extraction the live test relies on, checked on expressions whose answer is known.
  assert.deepEqual(metricNames('sum by (pid) (rate(a_total{x="y z"}[5m])) * on (pid) group_left (comm) b_info offset 1h > 1e3'), ['a_total', 'b_info']);
  assert.deepEqual(metricNames('instance:x:deriv1h * 3600 or vector(0)'), ['instance:x:deriv1h']);
});
