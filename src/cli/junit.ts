/** `sockleak run --junit FILE`: the run's verdict as JUnit XML, for CI systems that display it. */
import type { RunResult } from '../run/run';
import { formatAge } from './format';
import { leakLine } from './run-report';

/** Text safe inside XML 1.0 content and attribute values: escaped, with characters XML cannot hold replaced. */
export function xmlEscape(text: string): string {
  return text
    .replace(/[^\t\n\r\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/gu, '\uFFFD')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

interface TestCase {
  name: string;
  failure?: { type: string; message: string; detail: string };
}

function testCases(result: RunResult): TestCase[] {
  const cases: TestCase[] = result.leaks.map((l) => {
    const owner = l.owners[0];
    const who = owner ? `${owner.comm}[${owner.pid}] fd ${owner.fd}` : 'no process';
    const message =
      l.reason === 'outlived'
        ? `CLOSE_WAIT socket to ${l.remote} still held by ${who}, which outlived the command`
        : `socket to ${l.remote} stayed in CLOSE_WAIT ${formatAge(l.heldMs)} (threshold ${formatAge(result.thresholdMs)}), held by ${who}`;
    return {
      name: `leaked socket: ${who} -> ${l.remote}`,
      failure: { type: 'CLOSE_WAIT', message, detail: `${leakLine(l)}\n${JSON.stringify(l, null, 2)}` },
    };
  });
  if (cases.length === 0) cases.push({ name: 'socket leaks' });
  const tw = result.timeWait;
  if (tw) {
    const detail = tw.byDestination.map((c) => `${c.comm}[${c.pid}] closed ${c.count} connections to ${c.remote} first`).join('\n');
    cases.push({
      name: `TIME_WAIT budget ${tw.budget}`,
      ...(tw.exceeded && {
        failure: { type: 'TIME_WAIT', message: `the command's processes produced ${tw.produced} TIME_WAIT sockets, budget ${tw.budget}`, detail },
      }),
    });
  }
  return cases;
}

/** One <testsuite> "sockleak run": a failing test case per leak (or one passing "socket leaks"), and the TIME_WAIT budget. */
export function renderJunit(result: RunResult): string {
  const cases = testCases(result);
  const failures = cases.filter((c) => c.failure).length;
  const seconds = (result.durationMs / 1000).toFixed(3);
  const attr = (name: string, value: string | number): string => ` ${name}="${xmlEscape(String(value))}"`;
  const out = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<testsuites${attr('name', 'sockleak run')}${attr('tests', cases.length)}${attr('failures', failures)}${attr('errors', 0)}${attr('time', seconds)}>`,
    `  <testsuite${attr('name', `sockleak run: ${result.command.join(' ')}`)}${attr('tests', cases.length)}${attr('failures', failures)}${attr('errors', 0)}${attr('skipped', 0)}${attr('time', seconds)}${attr('timestamp', result.startedAt.slice(0, 19))}>`,
    '    <properties>',
    `      <property${attr('name', 'command')}${attr('value', JSON.stringify(result.command))}/>`,
    `      <property${attr('name', 'exitCode')}${attr('value', result.exitCode)}/>`,
    `      <property${attr('name', 'thresholdMs')}${attr('value', result.thresholdMs)}/>`,
    `      <property${attr('name', 'allowed')}${attr('value', result.allowed)}/>`,
    '    </properties>',
  ];
  for (const c of cases) {
    const open = `    <testcase${attr('classname', 'sockleak.run')}${attr('name', c.name)}${attr('time', 0)}`;
    if (!c.failure) {
      out.push(`${open}/>`);
      continue;
    }
    out.push(`${open}>`);
    out.push(`      <failure${attr('type', c.failure.type)}${attr('message', c.failure.message)}>${xmlEscape(c.failure.detail)}</failure>`);
    out.push('    </testcase>');
  }
  out.push('  </testsuite>', '</testsuites>', '');
  return out.join('\n');
}
