#!/usr/bin/env node
// Regenerates the README's pictures from a real run: examples/incident-1.js leaking under the real
// tool, recorded by `sockleak agent --record` and shown by `sockleak watch` on a pseudo-terminal.
//   docs/img/leak-growth.svg  the demo's CLOSE_WAIT sockets over time, from the recording
//   docs/img/watch-table.svg  the last screen `sockleak watch --pid PID` drew
//
// usage, as root after scripts/setup.sh:
//   node scripts/render-pictures.mjs [--seconds 40] [--every 5s] [--threads 8] [--backends 4] [--out docs/img]
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { lineChart, terminalSvg } from './svg-chart.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(ROOT, 'bin', 'sockleak.js');
const DEMO = path.join(ROOT, 'examples', 'incident-1.js');
const THRESHOLD = '2s';

class Failure extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

const started = []; // children this script started, stopped on any exit
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

try {
  process.exitCode = await main();
} catch (err) {
  console.error(`render-pictures: ${err instanceof Failure ? err.message : err.stack}`);
  process.exitCode = err instanceof Failure ? err.code : 70;
} finally {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

async function main() {
  let opts;
  try {
    const { values } = parseArgs({
      options: {
        seconds: { type: 'string', default: '40' },
        every: { type: 'string', default: '5s' },
        threads: { type: 'string', default: '8' },
        backends: { type: 'string', default: '4' },
        out: { type: 'string', default: path.join(ROOT, 'docs', 'img') },
      },
    });
    opts = { ...values, seconds: Number(values.seconds) };
    if (!(opts.seconds >= 5)) throw new Error(`--seconds must be a number of seconds, 5 at least, got '${values.seconds}'`);
    const every = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(values.every);
    const everySeconds = every ? Number(every[1]) * { ms: 0.001, s: 1, m: 60 }[every[2] ?? 's'] : NaN;
    if (!(everySeconds >= 0.1)) throw new Error(`--every must be a duration such as 5s or 500ms, got '${values.every}'`);
    // The last deletion comes early enough for its sockets to pass the threshold before the stop.
    opts.deletions = String(Math.max(1, Math.floor((opts.seconds - 3) / everySeconds)));
  } catch (err) {
    throw new Failure(err.message, 64);
  }
  if (process.getuid?.() !== 0) throw new Failure('run as root: sockleak loads BPF programs', 77);
  if (!onPath('script')) throw new Failure('script(1) not found (Debian: apt-get install bsdutils)', 69);
  const recordingJs = path.join(ROOT, 'dist', 'src', 'recording.js');
  if (!existsSync(recordingJs)) throw new Failure(`${path.relative(ROOT, recordingJs)} is missing: run scripts/setup.sh first`, 69);
  const { readRecording } = createRequire(import.meta.url)(recordingJs);

  const tmp = mkdtempSync(path.join(os.tmpdir(), 'sockleak-pictures-'));
  try {
    const recording = path.join(tmp, 'demo.rec');
    // 1. The agent first, so that it sees every connect() the demo makes.
    const agent = start(process.execPath, [CLI, 'agent', '--listen', '127.0.0.1:0', '--record', recording, '--threshold', THRESHOLD, '--interval', '1s', '--no-ports']);
    await lineMatching(agent.stderr, /^sockleak: agent on /, 60_000, 'the agent to start');

    // 2. The demo, stopped before it runs (exec keeps the pid): watch --pid needs its pid, and must
    // be attached before its threads connect for their ids to be known.
    const demo = start('sh', ['-c', 'kill -STOP $$; exec "$0" "$@"', process.execPath, DEMO,
      '--threads', opts.threads, '--backends', opts.backends, '--delete-every', opts.every, '--deletions', opts.deletions]);
    const pid = demo.pid;
    await until(() => procState(pid) === 'T', 5000, 'the demo to stop before it starts');

    // 3. watch on a pseudo-terminal (script(1)), where it draws its table.
    const pidFile = path.join(tmp, 'watch.pid');
    const watchArgs = `watch --pid ${pid} --threshold ${THRESHOLD}`;
    const watch = start('script', ['-q', '-c', `stty cols 200 rows 60; echo $$ > ${pidFile}; exec ${process.execPath} ${CLI} ${watchArgs}`, '/dev/null']);
    let screen = '';
    watch.stdout.on('data', (d) => (screen += d.toString('utf8')));
    await until(() => screen.includes('sockleak: watching'), 60_000, 'watch to start');

    // 4. Run: each deletion's time is taken as the demo reports it.
    const deletions = [];
    const demoLines = readline.createInterface({ input: demo.stdout });
    demoLines.on('line', (line) => {
      if (line.includes(' deleted backend ')) deletions.push(Date.now() / 1000);
    });
    let demoErr = '';
    demo.stderr.on('data', (d) => (demoErr += d));
    process.kill(pid, 'SIGCONT');
    const from = Date.now() / 1000;
    const early = once(demo, 'exit').then(() => {
      throw new Failure(`the demo ended early: ${demoErr.trim() || `exit ${demo.exitCode ?? demo.signalCode}`}`, 70);
    });
    await Promise.race([sleep(opts.seconds * 1000), early]);
    early.catch(() => {}); // it ends when we stop it below

    process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGINT');
    await exited(watch, 10_000, 'watch');
    const restart = Date.now() / 1000;
    demo.kill('SIGINT');
    await exited(demo, 10_000, 'the demo');
    await sleep(3000); // the exits' Resolved records
    agent.kill('SIGTERM');
    await exited(agent, 20_000, 'the agent');

    // 5. The pictures.
    const { points, peak } = leakSeries(readRecording(recording), pid, from);
    if (deletions.length === 0 || peak === 0) throw new Failure(`the run recorded no leak (deletions ${deletions.length}, peak ${peak})`, 70);
    const growth = lineChart({
      title: `examples/incident-1.js: +${opts.threads} CLOSE_WAIT sockets per deleted backend, until a restart`,
      yLabel: 'sockets in CLOSE_WAIT',
      series: [{ name: `svc-a (pid ${pid}, ${opts.threads} worker threads), from sockleak agent --record`, points, step: true }],
      markers: [...deletions.map((at) => ({ at })), { at: restart, label: 'restart' }],
      markerName: 'a backend deleted',
      width: 860,
      height: 380,
    });
    const frame = lastFrame(screen);
    const table = terminalSvg(`# sockleak ${watchArgs}\n${frame}`, {
      title: 'sockleak watch',
      columns: Math.max(100, ...frame.split('\n').filter((l) => l.startsWith('│')).map((l) => [...l].length)),
    });
    mkdirSync(opts.out, { recursive: true });
    writeFileSync(path.join(opts.out, 'leak-growth.svg'), growth);
    writeFileSync(path.join(opts.out, 'watch-table.svg'), table);
    console.log(
      `render-pictures: ${deletions.length} deletions, up to ${peak} leaks in pid ${pid}; wrote ${path.relative(process.cwd(), path.join(opts.out, 'leak-growth.svg'))} and watch-table.svg`,
    );
    return 0;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function onPath(command) {
  return (process.env.PATH ?? '').split(':').some((dir) => dir && existsSync(path.join(dir, command)));
}

function start(command, args) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  started.push(child);
  child.stderr.on('data', () => {}); // read, so a chatty child never blocks
  return child;
}

/**
 * The demo's leaks over time from the recording's Leak and Resolved records: a leak counts from
 * when it entered CLOSE_WAIT (its record's time less its age), so steps sit at the deletions
 * rather than a threshold later.
 */
function leakSeries(records, pid, from) {
  const changes = []; // [unix seconds, +1 | -1]
  const open = new Set();
  for (const { record } of records) {
    const t = Number(record.timeUnixMs) / 1000;
    if (record.leak && record.leak.socket.owners.some((o) => o.pid === pid)) {
      const { cookie, stateAgeMs } = record.leak.socket;
      open.add(String(cookie));
      changes.push([t - Number(stateAgeMs ?? 0) / 1000, +1]);
    } else if (record.resolved && open.delete(String(record.resolved.cookie))) {
      changes.push([t, -1]);
    }
  }
  changes.sort((a, b) => a[0] - b[0]);
  let n = 0;
  let peak = 0;
  const points = [[from, 0]];
  for (const [t, d] of changes) {
    n += d;
    peak = Math.max(peak, n);
    points.push([t, n]);
  }
  if (changes.length) points.push([changes.at(-1)[0] + 2, n]);
  return { points, peak };
}

/** The last complete screen watch drew (it clears the screen before each), without stderr's exit lines. */
function lastFrame(screen) {
  const frames = screen.split('\x1b[H\x1b[2J').slice(1);
  if (frames.length < 2) throw new Failure('watch drew no table on the pseudo-terminal', 70);
  const lines = frames.at(-1).replace(/\r/g, '').split('\n');
  while (lines.length && (lines.at(-1).trim() === '' || lines.at(-1).startsWith('sockleak: '))) lines.pop();
  return lines.join('\n');
}

function procState(pid) {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0];
  } catch {
    return undefined;
  }
}

async function until(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Failure(`timed out waiting for ${what}`, 70);
    await sleep(50);
  }
}

async function lineMatching(stream, re, timeoutMs, what) {
  let seen = '';
  stream.on('data', (d) => (seen += d));
  await until(() => seen.split("\n").some((l) => re.test(l)), timeoutMs, what);
}

async function exited(child, timeoutMs, what) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  await once(child, 'exit');
  clearTimeout(timer);
  if (child.signalCode === 'SIGKILL') throw new Failure(`${what} did not stop within ${timeoutMs / 1000}s`, 70);
}
