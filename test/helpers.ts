/** Shared plumbing for the real-BPF tests: child processes, CLI runs, event collection. */
import { spawn, spawnSync, type ChildProcessByStdio } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import type { Readable, Writable } from 'node:stream';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import type { TraceEvent } from '../src/events';
import type { Tracer } from '../src/trace/tracer';

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

/** Starts test/fixtures/NAME.js with node, or NAME.py with python3. */
export function startFixture(name: string, args: string[] = []): Fixture {
  const python = name.endsWith('.py');
  const script = python ? path.join(ROOT, 'test', 'fixtures', name) : path.join(FIXTURES, `${name}.js`);
  const child = spawn(python ? 'python3' : process.execPath, [script, ...args], {
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

/** The holder.py fixture: a process that holds sockets as the test tells it to. */
export interface Holder {
  pid: number;
  request<T = Record<string, unknown>>(cmd: Record<string, unknown>): Promise<T>;
  kill(): void;
}

export async function startHolder(): Promise<Holder> {
  const f = startFixture('holder.py');
  const { pid } = await f.next<{ pid: number }>();
  return {
    pid,
    request: <T>(cmd: Record<string, unknown>) => {
      f.send(JSON.stringify(cmd));
      return f.next<T>();
    },
    kill: () => f.kill(),
  };
}

/** Loopback servers standing for backends; remove() closes every connection they accepted. */
export interface Backend {
  host: string;
  port: number;
  remote: string;
  accepted: net.Socket[];
  remove(): Promise<void>;
}

export async function startBackend(host: string): Promise<Backend> {
  const accepted: net.Socket[] = [];
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    accepted.push(s);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, resolve);
  });
  const { port } = server.address() as net.AddressInfo;
  return {
    host,
    port,
    remote: host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`,
    accepted,
    remove: async () => {
      for (const s of accepted) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** A listener that never accepts (python3): connections its peers close wait in its backlog, in CLOSE_WAIT, held by no fd. */
export interface NeverAccepting {
  port: number;
  pid: number;
  kill(): void;
}

const LISTEN_NEVER_ACCEPT = `
import socket, sys, time
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)
s.bind((sys.argv[1], 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
time.sleep(600)
`;

/** Starts one on `host`; undefined if it cannot bind there (no IPv6 loopback, say). */
export async function listenNeverAccepting(host: string): Promise<NeverAccepting | undefined> {
  const child = spawn('python3', ['-c', LISTEN_NEVER_ACCEPT, host], { stdio: ['ignore', 'pipe', 'ignore'] });
  const [line] = (await Promise.race([once(child.stdout, 'data'), once(child, 'exit')])) as [Buffer | number];
  if (!Buffer.isBuffer(line)) return undefined;
  return { port: Number(line.toString().trim()), pid: child.pid!, kill: () => child.kill('SIGKILL') };
}

/** Waits until the peer sockets have arrived (accept is asynchronous). */
export async function waitFor(check: () => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
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
  const r = spawnSync(command, argv, {
    encoding: 'utf8',
    env: { ...process.env, ...options.env },
    timeout: 60_000,
    maxBuffer: 1 << 28,
  });
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

/** `count` CLOSE_WAIT sockets held by a new process: it connects to a new backend, which then goes away. */
export async function startLeakyHolder(host: string, count: number): Promise<{ holder: Holder; backend: Backend }> {
  const backend = await startBackend(host);
  const holder = await startHolder();
  await holder.request({ op: 'threads', count: 1, targets: Array.from({ length: count }, () => [backend.host, backend.port]) });
  await waitFor(() => backend.accepted.length === count, 5000, 'accepts');
  await backend.remove();
  return { holder, backend };
}

/** `sockleak agent` as a child process, as operators run it, from its start-up line on. */
export interface AgentProcess {
  child: ChildProcessByStdio<null, null, Readable>;
  pid: number;
  /** `http://host:port` (or https) from its start-up line. */
  base: string;
  /** `host:port`, for a scrape config. */
  target: string;
  port: number;
  stderr(): string;
  exited: Promise<number | null>;
  /** SIGTERM (if still running), then its exit code. */
  stop(): Promise<number | null>;
}

/** Agents still running when the test process ends are killed then. */
const agents = new Set<ChildProcessByStdio<null, null, Readable>>();
process.once('exit', () => agents.forEach((c) => c.exitCode === null && c.kill('SIGKILL')));

/**
 * Starts `sockleak agent ARGS`, or `argv` (a command that ends by running it: setpriv, unshare),
 * and waits for its start-up line; a start that fails throws with its stderr.
 */
export async function startAgentProcess(args: string[], options: { argv?: string[]; env?: NodeJS.ProcessEnv } = {}): Promise<AgentProcess> {
  const argv = options.argv ?? [process.execPath, CLI, 'agent', ...args];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], ...(options.env && { env: options.env }) });
  agents.add(child);
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  exited.finally(() => agents.delete(child)).catch(() => undefined);
  await waitFor(() => / agent on https?:\/\//.test(stderr) || child.exitCode !== null, 30_000, 'agent start');
  const m = / agent on (https?):\/\/(\S+:(\d+)) /.exec(stderr);
  if (!m) {
    child.kill('SIGKILL');
    throw new Error(`agent did not start: ${stderr}`);
  }
  return {
    child,
    pid: child.pid!,
    base: `${m[1]}://${m[2]}`,
    target: m[2]!,
    port: Number(m[3]),
    stderr: () => stderr,
    exited,
    stop: () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}

/** One HTTP request's reply, body as text. */
export function httpRequest(url: string, method = 'GET'): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The Go leaker's source (test/fixtures/leak-stack.go). */
export const GO_LEAKER_SOURCE = path.join(ROOT, 'test', 'fixtures', 'leak-stack.go');
/** Debian's golang-go (scripts/setup.sh installs it): a machine without it skips the Go cases. */
export const HAVE_GO = spawnSync('go', ['version']).status === 0;

/**
 * Builds the Go leaker as `dir/name` with `flags` (cgo on or off) and returns its path. Its own
 * build cache under `dir`: the guests of scripts/vm-test.sh see the host's files read-only.
 */
export function buildGoLeaker(dir: string, name: string, options: { flags?: readonly string[]; cgo: boolean }): string {
  const binary = path.join(dir, name);
  const env = { ...process.env, GOCACHE: path.join(dir, 'go-cache'), HOME: dir, GO111MODULE: 'off', CGO_ENABLED: options.cgo ? '1' : '0' };
  const built = spawnSync('go', ['build', ...(options.flags ?? []), '-o', binary, GO_LEAKER_SOURCE], { encoding: 'utf8', env });
  if (built.status !== 0) throw new Error(`go build ${name}: ${built.stderr}`);
  return binary;
}
