/** The grouped table people read: the biggest groups first, at most MAX_TABLE_ROWS of them. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { groupSockets, MAX_TABLE_ROWS, renderGroups, summarize } from '../src/cli/leak-groups';
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
