/**
 * Every process the benchmark starts goes through here, so that one call
 * (killAll) ends them all, on success, failure or Ctrl-C. The C helpers also
 * set PR_SET_PDEATHSIG; tracers get it through `setpriv --pdeathsig`.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import readline from 'node:readline';

const live = new Set<ChildProcess>();

/** Starts a process and registers it for killAll(). */
export function start(command: string, args: string[], options: SpawnOptions = {}): ChildProcess {
  const child = spawn(command, args, options);
  live.add(child);
  child.once('exit', () => live.delete(child));
  child.once('error', () => live.delete(child));
  return child;
}

/** SIGKILLs every process started here that is still running. Synchronous: safe in an 'exit' handler. */
export function killAll(): void {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** Resolves with the exit code (or signal name) once the process has exited. */
export function exited(child: ChildProcess): Promise<number | string> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  if (child.signalCode !== null) return Promise.resolve(child.signalCode);
  return new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? signal ?? -1));
    child.once('error', () => resolve(-1));
  });
}

/** Sends `signal`, then SIGKILL if the process has not exited after `graceMs`. Returns how it ended. */
export async function stop(child: ChildProcess, signal: NodeJS.Signals, graceMs: number): Promise<number | string> {
  if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  const how = await exited(child);
  clearTimeout(timer);
  return how;
}

/** Reads a child's stdout as JSON lines, one at a time. */
export class JsonLines {
  private readonly lines: string[] = [];
  private waiter: ((line: string) => void) | undefined;
  private closed = false;

  constructor(private readonly child: ChildProcess) {
    if (!child.stdout) throw new Error('JsonLines needs a piped stdout');
    const rl = readline.createInterface({ input: child.stdout });
    rl.on('line', (line) => {
      const waiter = this.waiter;
      this.waiter = undefined;
      if (waiter) waiter(line);
      else this.lines.push(line);
    });
    rl.on('close', () => {
      this.closed = true;
      this.waiter?.('');
    });
  }

  /** The next line, parsed; rejects on timeout or if the process ends first. */
  next<T>(timeoutMs: number, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const take = (line: string): void => {
        clearTimeout(timer);
        if (line === '' && this.closed) reject(new Error(`${what}: process ended before printing`));
        else resolve(JSON.parse(line) as T);
      };
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`${what}: no output after ${timeoutMs} ms`));
      }, timeoutMs);
      const queued = this.lines.shift();
      if (queued !== undefined) take(queued);
      else if (this.closed) take('');
      else this.waiter = take;
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }
}

/** Collects everything a stream says (e.g. a tracer's stderr), for totals and error messages. */
export function collect(stream: NodeJS.ReadableStream | null): () => string {
  const chunks: Buffer[] = [];
  stream?.on('data', (chunk: Buffer) => chunks.push(chunk));
  return () => Buffer.concat(chunks).toString('utf8');
}

export interface Timed {
  code: number | string;
  stdout: string;
  stderr: string;
  wallMs: number;
}

/** Runs a command to completion and measures its wall time, from spawn to exit. */
export async function timed(command: string, args: string[], timeoutMs = 300_000): Promise<Timed> {
  const t0 = process.hrtime.bigint();
  const child = start(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const out = collect(child.stdout);
  const err = collect(child.stderr);
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  // 'close', not 'exit': the output pipes must be drained too.
  const code = await new Promise<number | string>((resolve) => {
    child.once('close', (c, signal) => resolve(c ?? signal ?? -1));
    child.once('error', () => resolve(-1));
  });
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  clearTimeout(timer);
  return { code, stdout: out(), stderr: err(), wallMs };
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
