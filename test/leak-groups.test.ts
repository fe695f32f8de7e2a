/** The grouped table people read: the biggest groups first, at most MAX_TABLE_ROWS of them. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { forecastLines, groupSockets, MAX_FORECAST_LINES, MAX_TABLE_ROWS, renderGroups, summarize } from '../src/cli/leak-groups';
import type { ProcessForecastRecord } from '../src/forecast/fd-forecast';
import type { SocketInfo } from '../src/sockets';

function socket(i: number, remote: string, pid: number): SocketInfo {
  return {
    cookie: String(i),
    state: 'CLOSE_WAIT',
    family: 4,
    local: `127.0.0.1:${10_000 + i}`,
    remote,
    netns: 1,
    owners: [{ pid, comm: 'svc', fd: 10 + i }],
    creator: null,
    keepalive: false,
    keepaliveProbeInMs: null,
    stateAgeMs: 1000,
    ageEstimated: true,
  } as unknown as SocketInfo;
}

test('a machine with thousands of groups: the biggest MAX_TABLE_ROWS shown, the rest summed on one line', () => {
  const sockets: SocketInfo[] = [];
  for (let i = 0; i < 5000; i++) sockets.push(socket(i, `10.0.${i >> 8}.${i & 255}:9000`, 7));
  for (let i = 0; i < 360; i++) sockets.push(socket(5000 + i, '10.9.9.9:9000', 7)); // the big one
  const groups = groupSockets(sockets);
  const text = renderGroups(groups);
  const rows = text.split('\n').filter((l) => l.startsWith('│'));
  assert.equal(rows.length, MAX_TABLE_ROWS + 1, 'header + MAX_TABLE_ROWS rows');
  assert.match(rows[1]!, /10\.9\.9\.9:9000 .*│ 360 /, 'the biggest group first');
  assert.match(text, new RegExp(`… and ${5001 - MAX_TABLE_ROWS} more groups \\(${5001 - MAX_TABLE_ROWS} sockets\\); --json lists every socket$`));
  assert.deepEqual(summarize(groups), [
    'pid 7 (svc) holds 5360 CLOSE_WAIT sockets to 10.9.9.9:9000, 10.0.0.0:9000, 10.0.0.1:9000 and 4998 more, oldest 1s, keepalive off: the kernel will never reap them.',
  ]);
});

test('a few groups: every one shown, no summing line', () => {
  const groups = groupSockets([socket(1, '10.0.0.1:9000', 7), socket(2, '10.0.0.2:9000', 8)]);
  const text = renderGroups(groups);
  assert.equal(text.split('\n').filter((l) => l.startsWith('│')).length, 3);
  assert.doesNotMatch(text, /more groups/);
});

test('forecast lines: one per process of the groups, its groups\' first leaks oldest first, at most MAX_FORECAST_LINES', () => {
  const now = Date.parse('2026-12-07T04:00:00.000Z');
  const aged = (i: number, remote: string, pid: number, ageMs: number, estimated: boolean): SocketInfo => ({ ...socket(i, remote, pid), stateAgeMs: ageMs, ageEstimated: estimated });
  const sockets = [aged(1, '10.0.3.9:9000', 7, 3_600_000, false), aged(2, '10.0.3.7:9000', 7, 6_313_000, true), aged(3, '10.0.0.1:80', 8, 1000, false)];
  for (let pid = 100; pid < 120; pid++) sockets.push(aged(pid, '10.1.1.1:80', pid, 1000, false));
  const forecast = (pid: number): ProcessForecastRecord => ({
    type: 'forecast', pid, comm: 'svc', leaksPerHour: 115, leaksInWindow: 115, windowMs: 3_600_000, openFds: 412, fdLimit: 1024,
    exhaustInSec: 19_158, firstLeakAt: '2026-12-07T02:14:47.000Z', firstLeakEstimated: true, running: true,
    forecast: `pid ${pid} (svc): 115 leaks/h; EMFILE in ~5h19m (412 of 1024 fds); first leak ~02:14:47 UTC`,
  });
  const lines = forecastLines(groupSockets(sockets, now), [7, ...Array.from({ length: 20 }, (_, i) => 100 + i)].map(forecast), now);
  assert.equal(lines[0], 'pid 7 (svc): 115 leaks/h; EMFILE in ~5h19m (412 of 1024 fds); first leak ~02:14:47 UTC to 10.0.3.7:9000, 03:00:00 UTC to 10.0.3.9:9000');
  assert.equal(lines.length, MAX_FORECAST_LINES + 1, 'pid 8 has no forecast; the rest cut');
  assert.match(lines[MAX_FORECAST_LINES]!, /more processes have forecasts: --json has every one/);
});

