/** Shared plumbing for the real-BPF tests: child processes, CLI runs, event collection. */
import { spawn, spawnSync, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import path from 'node:path';
import readline from 'node:readline';
import type { TraceEvent } from '../src/events';
import type { Tracer } from '../src/tracer';

export const ROOT = path.resolve(__dirname, '..', '..');
export const CLI = path.join(ROOT, 'bin', 'sockleak.js');
export const FIXTURES = path.join(__dirname, 'fixtures');

/** A child process speaking JSON lines on stdout. */
export interface Fixture {
  child: ChildProcessByStdio<Writable, Readable, null>;
  /** Resolves with the next JSON line the child prints. */
  next<T = Record<string, unknown>>(): Promise<T>;
  /** Writes a line to the child's stdin. */
  send(line: string): void;
  kill(): void;
}

export function startFixture(name: string, args: string[] = []): Fixture {
  const child = spawn(process.execPath, [path.join(FIXTURES, `${name}.js`), ...args], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines: string[] = [];
  const waiters: Array<(line: string) => void> = [];
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    const waiter = waiters.shift();
    if (waiter) waiter(line);
    else lines.push(line);
  });
  return {
    child,
    next: <T>() =>
      new Promise<T>((resolve, reject) => {
        const take = (line: string): void => resolve(JSON.parse(line) as T);
        const queued = lines.shift();
        if (queued !== undefined) return take(queued);
        child.once('exit', (code) => reject(new Error(`fixture ${name} exited (${code}) before printing`)));
        waiters.push(take);
      }),
    send: (line) => child.stdin.write(`${line}\n`),
    kill: () => child.kill('SIGKILL'),
  };
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI to completion, optionally as another user via setpriv. */
export function runCli(args: string[], options: { asUser?: number; env?: NodeJS.ProcessEnv } = {}): CliResult {
  const command = options.asUser === undefined ? process.execPath : 'setpriv';
  const argv =
    options.asUser === undefined
      ? [CLI, ...args]
      : [`--reuid=${options.asUser}`, `--regid=${options.asUser}`, '--clear-groups', process.execPath, CLI, ...args];
  const r = spawnSync(command, argv, { encoding: 'utf8', env: { ...process.env, ...options.env }, timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Collects events until `done` says so (checked after each batch) or the timeout passes. */
export async function collectUntil(
  tracer: Tracer,
  done: (events: TraceEvent[]) => boolean,
  timeoutMs = 10_000,
): Promise<TraceEvent[]> {
  const events: TraceEvent[] = [];
  const timer = setTimeout(() => void tracer.close(), timeoutMs);
  for await (const batch of tracer.batches()) {
    events.push(...batch);
    if (done(events)) break;
  }
  clearTimeout(timer);
  await tracer.close();
  return events;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
