/**
 * `runWithLeakCheck()`, the engine of `sockleak run`: starts a command, follows
 * its whole process tree in the kernel, and when the command exits reports the
 * sockets the tree leaked:
 *   - every socket that stayed in CLOSE_WAIT longer than the threshold while a
 *     process of the tree held it (even if an exit closed it later);
 *   - every CLOSE_WAIT socket still held by descendants that outlive the command;
 *   - optionally, TIME_WAIT produced beyond a budget (time-wait-budget.ts).
 *
 * The command is started stopped: a shell waits on a pipe, its pid joins the
 * tree, and only then does it exec the command, so no fork escapes.
 */
import type { CgroupFilter } from '../cgroup-path';
import { spawn } from 'node:child_process';
import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { CommandNotFoundError, ExitCode, UsageError } from '../errors';
import { LeakLog, type LeakedSocket } from './leak-log';
import { startLeakEngine } from '../watch/leak-engine';
import { decodeActiveCloses } from '../ports/port-closes';
import { matchesAnyRemote, parseRemotePattern, type RemotePattern } from '../remote-pattern';
import { timeWaitReport, type TimeWaitReport } from './time-wait-budget';
import { FdForecaster, type ProcessForecastRecord } from '../forecast/fd-forecast';

export type { LeakedSocket } from './leak-log';

/** Options of runWithLeakCheck(); every field is optional. */
export interface RunOptions {
  /** How long a socket may stay in CLOSE_WAIT, in ms. Default 5000. */
  thresholdMs?: number;
  /** Remote patterns of expected leaks, never reported (syntax: remote-pattern.ts, docs/commands.md). */
  allow?: readonly string[];
  /** Report a leak when the tree produces more TIME_WAIT sockets (connections it closed first) than this. */
  timeWaitBudget?: number;
  /** Forward SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 received meanwhile to the command. Default true. */
  forwardSignals?: boolean;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** How often the kernel is asked for leaks, in ms. Default 100. */
  tickMs?: number;
  btfPath?: string;
  /** Only leaks held or created in this cgroup (or under it) and container (`--cgroup`, `--container`). */
  where?: CgroupFilter;
}

/** What happened: the command's own exit and the tree's leaks. */
export interface RunResult {
  command: string[];
  /** When the command started (ISO 8601) and how long it ran. */
  startedAt: string;
  durationMs: number;
  /** The command's exit code; 128 + signal number when a signal killed it. */
  exitCode: number;
  /** The signal that killed the command, if one did. */
  signal: NodeJS.Signals | null;
  thresholdMs: number;
  /** Leaked sockets, not counting allowed ones; by pid, then fd. */
  leaks: LeakedSocket[];
  /** Leaks --allow patterns suppressed. */
  allowed: number;
  /** Processes of the tree still running when the command exited. */
  outlivingPids: number[];
  /** Present when a TIME_WAIT budget was given. */
  timeWait?: TimeWaitReport;
  /** Per process holding a reported leak: its leak rate, fds, fd limit, the EMFILE forecast and its first leak (fds as last read while it ran). */
  forecasts: ProcessForecastRecord[];
}

/** How often `run` reads /proc for the processes holding leaks: their fds are gone once they exit. */
const FORECAST_MS = 250;

const FORWARDED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'];
/** Waits on fd 3 before exec: the pid joins the tree before the command can fork. */
const STOPPED_START = 'read _ <&3 || exit 125; exec "$@" 3<&-';

/** The exit code of a leak gate: the command's failure, else 3 when anything leaked, else 0. */
export function gateExitCode(result: RunResult): number {
  if (result.exitCode !== 0) return result.exitCode;
  return result.leaks.length > 0 || result.timeWait?.exceeded ? ExitCode.LEAKED : ExitCode.OK;
}

function validate(command: readonly string[], options: RunOptions): RemotePattern[] {
  if (command.length === 0 || !command[0]) throw new UsageError('no command to run');
  const { thresholdMs, timeWaitBudget } = options;
  if (thresholdMs !== undefined && (!Number.isSafeInteger(thresholdMs) || thresholdMs < 0)) {
    throw new UsageError(`threshold must be an integer >= 0 ms, got ${thresholdMs}`);
  }
  if (timeWaitBudget !== undefined && (!Number.isSafeInteger(timeWaitBudget) || timeWaitBudget < 0)) {
    throw new UsageError(`time-wait budget must be an integer >= 0, got ${timeWaitBudget}`);
  }
  return (options.allow ?? []).map((p) => parseRemotePattern(p));
}

/** Finds `name` as a shell would (PATH search unless it has a slash); throws CommandNotFoundError. */
export function resolveCommand(name: string, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): string {
  const candidates = name.includes('/')
    ? [path.resolve(cwd, name)]
    : (env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':').map((dir) => path.resolve(cwd, dir || '.', name));
  let denied: string | undefined;
  for (const file of candidates) {
    try {
      if (!statSync(file).isFile()) {
        denied ??= `${name}: is a directory`;
        continue;
      }
      accessSync(file, constants.X_OK);
      return file;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EACCES') denied ??= `${name}: permission denied`;
    }
  }
  if (denied) throw new CommandNotFoundError(denied, true);
  throw new CommandNotFoundError(`command not found: ${name}`);
}

/** True while `pid` runs (not a zombie): its fds, and so its sockets, still exist. */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return !/^[ZX]$/.test(stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3));
  } catch {
    return false;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Starts the command with its pid in the tree before it runs; resolves with its exit. */
async function runStopped(
  command: readonly string[],
  options: RunOptions,
  enter: (pid: number) => void,
): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  const child = spawn('/bin/sh', ['-c', STOPPED_START, 'sockleak-run', ...command], {
    stdio: ['inherit', 'inherit', 'inherit', 'pipe'],
    ...(options.cwd !== undefined && { cwd: options.cwd }),
    ...(options.env !== undefined && { env: options.env }),
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  exited.catch(() => undefined); // awaited below; an 'error' after an early throw must not go unhandled
  const gate = child.stdio[3] as Writable;
  gate.on('error', () => undefined); // the shell may be gone already (killed)
  const forward = (signal: NodeJS.Signals): void => void child.kill(signal);
  const forwarding = options.forwardSignals ?? true;
  try {
    if (child.pid === undefined) return await exited; // spawn failed: 'error' rejects
    enter(child.pid);
    if (forwarding) for (const s of FORWARDED) process.on(s, forward);
    gate.end('\n');
    return await exited;
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  } finally {
    for (const s of FORWARDED) process.off(s, forward);
  }
}

/**
 * Runs `command` (argv, no shell) under leak watch and reports what its process
 * tree leaked. Throws CommandNotFoundError (exit 127/126) when it cannot be
 * started, UsageError on bad options, and the environment errors of watch().
 * Never kills descendants that outlive the command; they are reported.
 */
export async function runWithLeakCheck(command: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const allow = validate(command, options);
  resolveCommand(command[0] ?? '', options.env ?? process.env, options.cwd ?? process.cwd());
  const thresholdMs = options.thresholdMs ?? 5000;
  const tickMs = options.tickMs ?? 100;
  const watcher = startLeakEngine({
    thresholdMs,
    tickMs,
    followTree: true,
    ...(options.where && { where: options.where }),
    // A test run is where a leak's code location helps most, and its tree is small.
    stacks: true,
    ...(options.btfPath !== undefined && { btfPath: options.btfPath }),
  });
  const forecaster = new FdForecaster({ thresholdMs });
  const log = new LeakLog(watcher, (r) => {
    const known = r.owners.every((o) => forecaster.get(o.pid));
    forecaster.observe(r);
    if (!known) forecaster.evaluate(); // a new holder's fds, read before it can exit
  });
  const forecasting = setInterval(() => forecaster.evaluate(), FORECAST_MS);
  // Short-lived processes leave TIME_WAIT too: poll membership faster than the leak ticks.
  const poll = options.timeWaitBudget !== undefined ? setInterval(() => watcher.treePids(), 10) : undefined;
  let rootPid = 0;
  const startedAt = new Date();
  try {
    const { code, signal } = await runStopped(command, options, (pid) => {
      rootPid = pid;
      watcher.addTreeRoot(pid);
    });
    clearInterval(poll);
    const exitedAt = Date.now();
    const durationMs = exitedAt - startedAt.getTime();
    const outlivingPids = watcher.treePids().filter((pid) => pid !== rootPid && running(pid));
    await watcher.flush(); // CLOSE_WAIT sockets the survivors hold count now, whatever their age
    // Leaks whose holders all exited resolve within a few ticks; wait for their final heldMs.
    while (Date.now() - exitedAt < 4 * tickMs + 500 && watcher.current().some((l) => !l.owners.some((o) => running(o.pid)))) {
      await sleep(tickMs / 2);
    }
    const timeWait =
      options.timeWaitBudget !== undefined
        ? timeWaitReport(decodeActiveCloses(watcher.activeCloses()), watcher.treeMembers(), options.timeWaitBudget)
        : undefined;
    const open = watcher.current();
    await watcher.close();
    await log.done;
    clearInterval(forecasting);
    forecaster.evaluate();

    const found = log.sockets(open, thresholdMs);
    const leaks = found.filter((l) => !matchesAnyRemote(allow, l.remote));
    leaks.sort((a, b) => (a.owners[0]?.pid ?? 0) - (b.owners[0]?.pid ?? 0) || (a.owners[0]?.fd ?? 0) - (b.owners[0]?.fd ?? 0));
    return {
      command: [...command],
      startedAt: startedAt.toISOString(),
      durationMs,
      exitCode: code ?? 128 + (signal ? (osConstants.signals[signal] ?? 0) : 0),
      signal,
      thresholdMs,
      leaks,
      allowed: found.length - leaks.length,
      outlivingPids,
      ...(timeWait && { timeWait }),
      forecasts: forecaster.current().filter((f) => leaks.some((l) => l.owners.some((o) => o.pid === f.pid))),
    };
  } finally {
    clearInterval(poll);
    clearInterval(forecasting);
    await watcher.close();
    await log.done.catch(() => undefined);
  }
}
