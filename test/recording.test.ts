/**
 * A recording survives restarts: a real agent (CLI, root, BPF) started twice
 * on one file appends a second session, `sockleak report` reads both, a torn
 * tail loses only itself, the file is private (0600), a file that is not a
 * recording is never appended to, and --record-max-size rotation (the
 * Recorder on real files) keeps FILE.1 + FILE readable as one run.
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { Recorder } from '../src/recording/recorder';
import { decodeRecordBytes, encodeRecord } from '../src/recording/schema';
import { ExitCode } from '../src/errors';
import { readRecording } from '../src/recording/recording';
import { CLI, runCli, startAgentProcess, startLeakyHolder, waitFor, type AgentProcess, type Holder } from './helpers';

const dir = mkdtempSync(path.join(os.tmpdir(), 'sockleak-recording-'));
const cleanups: Array<() => void> = [];
after(() => {
  for (const c of cleanups.reverse()) c();
  rmSync(dir, { recursive: true, force: true });
});

/** `sockleak agent --record file` until stop() (SIGTERM). */
function startAgent(file: string, extra: string[] = []): Promise<AgentProcess> {
  return startAgentProcess(['--record', file, '--listen', '127.0.0.1:0', '--threshold', '1s', '--interval', '1s', ...extra]);
}

/** `count` CLOSE_WAIT sockets held by a new process. */
async function leak(host: string, count: number): Promise<Holder> {
  const { holder } = await startLeakyHolder(host, count);
  cleanups.push(() => holder.kill());
  return holder;
}

interface ReportJson {
  sockets: Array<{ cookie: string; owners: Array<{ pid: number }> }>;
  sessions?: Array<{ pid: number; records: number; leaksReported: number; continued: boolean }>;
}

function report(...files: string[]): { code: number | null; json: ReportJson | undefined; text: string; stderr: string } {
  const j = runCli(['report', '--json', ...files]);
  const t = runCli(['report', ...files]);
  assert.equal(j.code, t.code);
  return { code: t.code, json: j.stdout ? (JSON.parse(j.stdout) as ReportJson) : undefined, text: t.stdout, stderr: t.stderr };
}

const heldBy = (r: ReportJson | undefined, pid: number): string[] =>
  (r?.sockets ?? []).filter((s) => s.owners.some((o) => o.pid === pid)).map((s) => s.cookie).sort();

test('agent started twice on one file: both sessions kept and reported; 0600; a torn tail loses only itself', { timeout: 180_000 }, async () => {
  const file = path.join(dir, 'restarts.rec');
  const holder = await leak('127.0.11.1', 3);

  const first = await startAgent(file);
  await waitFor(() => heldBy(report(file).json, holder.pid).length === 3, 30_000, 'the first run records the 3 leaks');
  assert.equal(await first.stop(), 0, first.stderr());
  assert.equal(statSync(file).mode & 0o777, 0o600, 'created 0600');
  const afterFirst = statSync(file).size;
  const cookies = heldBy(report(file).json, holder.pid);

  chmodSync(file, 0o644); // someone widened it: the next run tightens it, and says so
  const second = await startAgent(file);
  assert.match(second.stderr(), /--record .*restarts\.rec was mode 0644: now 0600/);
  assert.equal(statSync(file).mode & 0o777, 0o600);
  // The second run re-finds the same leaks after the first run's records, which are still there.
  await waitFor(() => (report(file).json?.sessions?.[1]?.leaksReported ?? 0) >= 3, 30_000, 'the second run re-finds the leaks');
  assert.equal(await second.stop(), 0, second.stderr());
  const bytes = readFileSync(file);
  assert.ok(bytes.length > afterFirst, 'appended, not truncated');

  const both = report(file);
  assert.equal(both.code, 0, both.stderr);
  assert.deepEqual(both.json?.sessions?.map((s) => s.pid), [first.pid, second.pid], 'one session per run, in order');
  assert.ok(both.json!.sessions!.every((s) => s.leaksReported >= 3 && !s.continued));
  assert.deepEqual(heldBy(both.json, holder.pid), cookies, 'the leaks open at the end: the same sockets');
  assert.match(both.text, /records in 2 agent runs/);
  assert.match(both.text, new RegExp(`run 1: pid ${first.pid}, sockleak \\d+\\.\\d+\\.\\d+,`));
  assert.match(both.text, new RegExp(`run 2: pid ${second.pid},`));

  // Every session starts with a Session record, then a Snapshot.
  const records = [...readRecording(file)].map((r) => r.record);
  const starts = records.flatMap((r, i) => ('session' in r && r.session ? [i] : []));
  assert.equal(starts.length, 2);
  for (const i of starts) assert.ok('snapshot' in records[i + 1]!, 'a Snapshot follows each Session record');

  // Killed mid-write: the file ends inside the last record. The report keeps both sessions and names the offset.
  const torn = path.join(dir, 'torn.rec');
  writeFileSync(torn, bytes.subarray(0, bytes.length - 3), { mode: 0o600 });
  const cut = report(torn);
  assert.equal(cut.code, ExitCode.DATA);
  assert.equal(cut.stderr.trim().split('\n').length, 1, cut.stderr);
  assert.match(cut.stderr, /torn\.rec: truncated record at byte offset \d+/);
  assert.match(cut.text, /records in 2 agent runs/);
  assert.equal(cut.json?.sessions?.length, 2);

  // A third run on the torn file cuts the torn record off, says so, and appends: all three read back.
  const third = await startAgent(torn);
  assert.match(third.stderr(), /--record .*torn\.rec: cut \d+ bytes at byte offset \d+ .*the sessions before are kept/);
  await waitFor(() => (report(torn).json?.sessions?.[2]?.leaksReported ?? 0) >= 3, 30_000, 'the third run re-finds the leaks');
  assert.equal(await third.stop(), 0, third.stderr());
  const three = report(torn);
  assert.equal(three.code, 0, three.stderr);
  assert.deepEqual(three.json?.sessions?.map((s) => s.pid), [first.pid, second.pid, third.pid]);
  holder.kill();
});

test('a file that is not a recording is refused (exit 64) and left as it was', () => {
  const file = path.join(dir, 'notes.txt');
  writeFileSync(file, 'my notes, not a recording\n', { mode: 0o644 });
  const r = runCli(['agent', '--record', file, '--listen', '127.0.0.1:0']);
  assert.equal(r.code, ExitCode.USAGE, r.stderr);
  assert.match(r.stderr, /notes\.txt: exists and is not a sockleak recording/);
  assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  assert.equal(readFileSync(file, 'utf8'), 'my notes, not a recording\n');
  assert.equal(statSync(file).mode & 0o777, 0o644);
  const bad = runCli(['agent', '--record', path.join(dir, 'x.rec'), '--record-max-size', '64k']);
  assert.equal(bad.code, ExitCode.USAGE);
  assert.match(bad.stderr, /--record-max-size: '64k' is 65536 bytes; use at least 1MiB/);
});

test('--record-max-size: the file rotates to FILE.1 within the bound; FILE.1 + FILE replay as one run, no record lost', () => {
  const file = path.join(dir, 'rotating.rec');
  const bound = 8192;
  const started = Date.now();
  let rotations = 0;
  const session = (rotated: boolean): Buffer =>
    encodeRecord({ timeUnixMs: Date.now(), seq: 0, session: { startedUnixMs: started, pid: 4242, host: 'h', version: '0.0.0', thresholdMs: 30_000, rotated } });
  const snapshot = (): Buffer =>
    encodeRecord({ timeUnixMs: Date.now(), seq: 0, snapshot: { takenAt: new Date().toISOString(), sockets: [], lost: 0, part: 0, more: false, thresholdMs: 30_000, host: 'h' } });
  const recorder = new Recorder(file, {
    maxFileBytes: bound,
    flushMs: 60_000,
    startFile: (rotated) => {
      if (rotated) rotations++;
      return [session(rotated), snapshot()];
    },
  });
  const total = 1000;
  for (let seq = 1; seq <= total; seq++) {
    recorder.append(encodeRecord({ timeUnixMs: Date.now(), seq, counters: { emitted: seq, lost: 0, mapFull: 0, missed: 0, evictions: 0, streamDropped: 0 } }));
  }
  recorder.close();
  assert.ok(rotations >= 2, `rotated (${rotations} times)`);
  assert.equal(recorder.rotations, rotations);
  assert.ok(existsSync(`${file}.1`));
  for (const f of [file, `${file}.1`]) {
    assert.ok(statSync(f).size <= bound, `${f}: ${statSync(f).size} bytes within ${bound}`);
    assert.equal(statSync(f).mode & 0o777, 0o600);
    const [head] = readRecording(f);
    assert.ok(head && 'session' in head.record && head.record.session?.rotated, `${f} starts with a rotated Session record`);
  }
  // The live records of FILE.1 then FILE: consecutive, ending with the last.
  const seqs = [...readRecording(`${file}.1`), ...readRecording(file)].map((r) => Number(r.record.seq)).filter((s) => s > 0);
  assert.equal(seqs[seqs.length - 1], total);
  seqs.forEach((s, i) => i > 0 && assert.equal(s, seqs[i - 1]! + 1, `no record lost at a rotation (after ${seqs[i - 1]})`));
  const r = report(`${file}.1`, file);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.json?.sessions?.length, 1, 'FILE.1 + FILE: the same run');
  assert.equal(r.json?.sessions?.[0]?.continued, true, 'its start was rotated away');
  assert.match(r.text, /run 1: pid 4242, .*began before this file/);
  assert.match(r.text, new RegExp(`totals: ${total} events`));
  // decodeRecordBytes round-trips a Session record's fields.
  const s = decodeRecordBytes(session(true).subarray(1));
  assert.ok('session' in s && s.session);
  assert.equal(Number(s.session.startedUnixMs), started);
});

test('a recording at its size bound when the agent starts: its sessions move to FILE.1 and FILE starts afresh', () => {
  const file = path.join(dir, 'full.rec');
  const old = encodeRecord({ timeUnixMs: 1000, seq: 1, counters: { emitted: 1, lost: 0, mapFull: 0, missed: 0, evictions: 0, streamDropped: 0 } });
  const count = Math.ceil((1 << 12) / old.length);
  writeFileSync(file, Buffer.concat(Array.from({ length: count }, () => old)), { mode: 0o600 });
  const recorder = new Recorder(file, { maxFileBytes: 1 << 12, startFile: () => [old] });
  assert.equal(statSync(file).size, count * old.length, 'nothing written before start()');
  recorder.start();
  recorder.close();
  assert.match(recorder.notes.join('\n'), /had reached the size bound .*now .*full\.rec\.1/);
  assert.equal(statSync(`${file}.1`).size, count * old.length);
  assert.equal(statSync(file).size, old.length);
  truncateSync(file, 0);
});
