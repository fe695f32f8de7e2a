/**
 * The verdict on one process running out of file descriptors: its CLOSE_WAIT
 * leak rate, when it gets EMFILE at that rate, and when its first socket
 * leaked. The forecaster is fed the leak records (observe()) and reads /proc
 * (fd-usage.ts) when asked (evaluate()); the rate estimator (leakRate()) and
 * the ETA (fdExhaustInSec()) are pure. docs/forecast.md explains the choices.
 */
import type { LeakRecord } from '../watch-records';
import { readFdUsage } from './fd-usage';

/** A process holding leaked sockets: how fast it leaks and when it runs out of fds. */
export interface ProcessForecastRecord {
  type: 'forecast';
  pid: number;
  comm: string;
  /** Leaks per hour over the window; null: fewer than the minimum of leaks (or all in one burst) in it. */
  leaksPerHour: number | null;
  /** Leaks of this process that entered CLOSE_WAIT within the window. */
  leaksInWindow: number;
  /** The window the rate is measured over, ms. */
  windowMs: number;
  /** Open fds (/proc/PID/fd) at the last read; null when never read (the process was gone). */
  openFds: number | null;
  /** RLIMIT_NOFILE soft limit (/proc/PID/limits) at the last read; null: unlimited or never read. */
  fdLimit: number | null;
  /** Seconds until no fd is left at the current rate; 0: at the limit now; null: no rate, or no limit. */
  exhaustInSec: number | null;
  /** When its first leaked socket (of those seen since sockleak started) entered CLOSE_WAIT, ISO 8601. */
  firstLeakAt: string;
  /** True when firstLeakAt comes from an estimated CLOSE_WAIT age (the leak predates sockleak). */
  firstLeakEstimated: boolean;
  /** False once /proc no longer has the process: the fd figures are the last ones read. */
  running: boolean;
  /** The forecast in one sentence. */
  forecast: string;
}

/** Settings of the forecaster. */
export interface FdForecastOptions {
  /** The leak threshold, ms: a leak is known this long after it entered CLOSE_WAIT. */
  thresholdMs: number;
  /** The rate's sliding window, ms. Default one hour. */
  windowMs?: number;
  /** Leaks (in distinct bursts) the window must hold before a rate is given. Default 5. */
  minLeaks?: number;
  /** Processes followed at once; the one whose last leak is oldest makes room. Default 256. */
  maxProcesses?: number;
}

export const FD_FORECAST_DEFAULTS = { windowMs: 3_600_000, minLeaks: 5, maxProcesses: 256 } as const;

/** Leak times kept per process: the rate is then taken over the newest ones, however fast it leaks. */
const MAX_TIMES = 1024;

/** Leaks this close together are one burst (a backend going away closes all its connections at once). */
const BURST_MS = 10;

const HOUR_MS = 3_600_000;

/**
 * How late a leak past the threshold may reach the forecaster (the engine's tick, a rescan, the
 * evaluation's own period): silence shorter than this after the mean gap is not yet silence.
 */
export const REPORT_GRACE_MS = 1000;

/**
 * Leaks per hour from the CLOSE_WAIT entry times in the window (ascending, ms),
 * `horizonMs` being the latest entry time that could be known (now − threshold).
 * (n − 1) intervals over the span from the first to the last leak, or, when no
 * leak came for longer than the mean interval plus `graceMs` (leaks past the
 * threshold not reported yet), to the horizon: a process that stopped leaking
 * sees its rate fall. Null with fewer than `minLeaks` leaks or distinct bursts:
 * one burst is an event, not a rate.
 */
export function leakRate(
  times: readonly number[],
  horizonMs: number,
  minLeaks: number = FD_FORECAST_DEFAULTS.minLeaks,
  graceMs = REPORT_GRACE_MS,
): number | null {
  const n = times.length;
  if (n < Math.max(2, minLeaks)) return null;
  let bursts = 1;
  for (let i = 1; i < n; i++) if (times[i]! - times[i - 1]! > BURST_MS) bursts++;
  if (bursts < minLeaks) return null;
  const first = times[0]!;
  const last = times[n - 1]!;
  const meanGap = (last - first) / (n - 1);
  const span = Math.max(last - first, horizonMs - first - meanGap - graceMs);
  return span > 0 ? ((n - 1) / span) * HOUR_MS : null;
}

/** When the fds run out at `perHour` leaks an hour (see ProcessForecastRecord.exhaustInSec). */
export function fdExhaustInSec(openFds: number, fdLimit: number | null, perHour: number | null): number | null {
  if (fdLimit === null) return null;
  if (openFds >= fdLimit) return 0;
  if (perHour === null || perHour <= 0) return null;
  return Math.max(1, Math.ceil(((fdLimit - openFds) / perHour) * 3600));
}

/** `3h10m`, `42m`, `35s`: the two largest units. */
export function approxDuration(sec: number): string {
  const s = Math.max(0, Math.round(sec));
  const units: Array<[string, number]> = [
    ['d', Math.floor(s / 86400)],
    ['h', Math.floor(s / 3600) % 24],
    ['m', Math.floor(s / 60) % 60],
    ['s', s % 60],
  ];
  const first = Math.max(0, units.findIndex(([, n]) => n > 0));
  return units
    .slice(first, first + 2)
    .filter(([, n], i) => i === 0 || n > 0)
    .map(([u, n]) => `${n}${u}`)
    .join('');
}

function rateText(perHour: number): string {
  return perHour >= 10 ? String(Math.round(perHour)) : perHour.toFixed(1);
}

/** `02:14:07 UTC` within a day of `nowMs`, else `2026-12-06 02:14 UTC`; `~` when estimated. */
export function clockText(atMs: number, nowMs: number, estimated: boolean): string {
  const iso = new Date(atMs).toISOString();
  const text = nowMs - atMs < 86_400_000 ? `${iso.slice(11, 19)} UTC` : `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
  return `${estimated ? '~' : ''}${text}`;
}

function sentence(r: Omit<ProcessForecastRecord, 'forecast'>, nowMs: number): string {
  const who = `pid ${r.pid} (${r.comm})`;
  let fds =
    r.openFds === null ? 'fds unknown: the process was gone' : r.fdLimit === null ? `${r.openFds} fds, no limit` : `${r.openFds} of ${r.fdLimit} fds`;
  if (!r.running && r.openFds !== null) fds += ' when last seen running';
  const first = `first leak ${clockText(Date.parse(r.firstLeakAt), nowMs, r.firstLeakEstimated)}`;
  if (r.exhaustInSec === 0) return `${who} is at its fd limit (${fds}): socket(), accept() and open() fail with EMFILE; ${first}`;
  const window = approxDuration(r.windowMs / 1000);
  const rate =
    r.leaksPerHour === null
      ? `${r.leaksInWindow} leak${r.leaksInWindow === 1 ? '' : 's'} in the last ${window}, too few to forecast`
      : `${rateText(r.leaksPerHour)} leaks/h`;
  const eta = r.exhaustInSec === null ? '' : `; EMFILE in ~${approxDuration(r.exhaustInSec)}`;
  return `${who}: ${rate}${eta} (${fds}); ${first}`;
}

interface ProcessState {
  pid: number;
  comm: string;
  /** CLOSE_WAIT entry times of its leaks in the window, ascending, ms. */
  times: number[];
  firstLeakMs: number;
  firstLeakEstimated: boolean;
  lastLeakMs: number;
  running: boolean;
  latest: ProcessForecastRecord | undefined;
  /** The last record emitted and when: the next goes out when the forecast moves materially from it. */
  emitted: { record: ProcessForecastRecord; atMs: number } | undefined;
}

/** A change of a fifth or more, of the rate or of the time left, is news; less is the estimator's noise. */
const MATERIAL = 0.2;

/**
 * Whether `now` says something `last` did not: the first record, a rate or an
 * ETA appearing or going, the fd limit changing, reaching the limit, the rate
 * moving by MATERIAL, or the moment of exhaustion moving by MATERIAL of the
 * time that was left (an ETA that only counts down is not news).
 */
function material(last: { record: ProcessForecastRecord; atMs: number } | undefined, now: ProcessForecastRecord, nowMs: number): boolean {
  if (!last) return true;
  const r = last.record;
  if ((r.leaksPerHour === null) !== (now.leaksPerHour === null) || (r.exhaustInSec === null) !== (now.exhaustInSec === null)) return true;
  if (r.fdLimit !== now.fdLimit || (r.exhaustInSec === 0) !== (now.exhaustInSec === 0)) return true;
  if (r.leaksPerHour !== null && now.leaksPerHour !== null && Math.abs(now.leaksPerHour - r.leaksPerHour) > MATERIAL * r.leaksPerHour) return true;
  if (r.exhaustInSec !== null && now.exhaustInSec !== null && r.exhaustInSec > 0) {
    const moved = Math.abs(nowMs + now.exhaustInSec * 1000 - (last.atMs + r.exhaustInSec * 1000));
    if (moved > MATERIAL * r.exhaustInSec * 1000) return true;
  }
  return false;
}

/** Per process: the leaks' times, the fds, the forecast. Fed leak records; evaluate() makes the records. */
export class FdForecaster {
  private readonly processes = new Map<number, ProcessState>();
  private readonly windowMs: number;
  private readonly minLeaks: number;
  private readonly maxProcesses: number;

  constructor(private readonly options: FdForecastOptions) {
    this.windowMs = options.windowMs ?? FD_FORECAST_DEFAULTS.windowMs;
    this.minLeaks = options.minLeaks ?? FD_FORECAST_DEFAULTS.minLeaks;
    this.maxProcesses = options.maxProcesses ?? FD_FORECAST_DEFAULTS.maxProcesses;
  }

  /** Counts a leak for each process holding it (each holds an fd of it). */
  observe(record: LeakRecord, nowMs = Date.now()): void {
    const enteredMs = nowMs - (record.stateAgeMs ?? this.options.thresholdMs);
    const seen = new Set<number>();
    for (const o of record.owners) {
      if (seen.has(o.pid)) continue;
      seen.add(o.pid);
      let p = this.processes.get(o.pid);
      if (!p) {
        this.makeRoom();
        p = {
          pid: o.pid,
          comm: o.comm,
          times: [],
          firstLeakMs: enteredMs,
          firstLeakEstimated: record.ageEstimated,
          lastLeakMs: nowMs,
          running: true,
          latest: undefined,
          emitted: undefined,
        };
        this.processes.set(o.pid, p);
      }
      p.comm = o.comm;
      p.lastLeakMs = nowMs;
      if (enteredMs < p.firstLeakMs) {
        p.firstLeakMs = enteredMs;
        p.firstLeakEstimated = record.ageEstimated;
      }
      insertSorted(p.times, enteredMs);
      if (p.times.length > MAX_TIMES) p.times.shift();
    }
  }

  private makeRoom(): void {
    if (this.processes.size < this.maxProcesses) return;
    let stalest: ProcessState | undefined;
    for (const p of this.processes.values()) if (!stalest || p.lastLeakMs < stalest.lastLeakMs) stalest = p;
    if (stalest) this.processes.delete(stalest.pid);
  }

  /**
   * Reads /proc for every followed process still running and recomputes its
   * forecast; returns the records that say something new (see material()), and
   * one with running false for a process found gone. A process gone with no
   * leak left in the window is forgotten.
   */
  evaluate(nowMs = Date.now()): ProcessForecastRecord[] {
    const horizonMs = nowMs - this.options.thresholdMs;
    const out: ProcessForecastRecord[] = [];
    for (const p of [...this.processes.values()]) {
      let drop = 0;
      while (drop < p.times.length && p.times[drop]! < horizonMs - this.windowMs) drop++;
      if (drop) p.times.splice(0, drop);
      if (!p.running) {
        // Gone: the figures stay those of its last evaluation while it ran.
        if (p.times.length === 0) this.processes.delete(p.pid);
        continue;
      }
      const usage = readFdUsage(p.pid);
      if (!usage) {
        p.running = false;
        if (p.latest) {
          const fields = { ...p.latest, running: false };
          p.latest = { ...fields, forecast: sentence(fields, nowMs) };
          out.push(p.latest);
        }
        continue;
      }
      // At its limit the process cannot leak more: its silence is forced, not a fix, and its rate stays that of its leaks.
      const atLimit = usage.fdLimit !== null && usage.openFds >= usage.fdLimit;
      const leaksPerHour = leakRate(p.times, atLimit ? -Infinity : horizonMs, this.minLeaks);
      const exhaustInSec = fdExhaustInSec(usage.openFds, usage.fdLimit, leaksPerHour);
      const fields = {
        type: 'forecast' as const,
        pid: p.pid,
        comm: p.comm,
        leaksPerHour: leaksPerHour === null ? null : Math.round(leaksPerHour * 10) / 10,
        leaksInWindow: p.times.length,
        windowMs: this.windowMs,
        openFds: usage.openFds,
        fdLimit: usage.fdLimit,
        exhaustInSec,
        firstLeakAt: new Date(p.firstLeakMs).toISOString(),
        firstLeakEstimated: p.firstLeakEstimated,
        running: true,
      };
      p.latest = { ...fields, forecast: sentence(fields, nowMs) };
      if (material(p.emitted, p.latest, nowMs)) {
        p.emitted = { record: p.latest, atMs: nowMs };
        out.push(p.latest);
      }
    }
    return out;
  }

  /** The latest forecast of each followed process (after the last evaluate()). */
  current(): ProcessForecastRecord[] {
    const out: ProcessForecastRecord[] = [];
    for (const p of this.processes.values()) if (p.latest) out.push(p.latest);
    return out;
  }

  /** The latest forecast of one process. */
  get(pid: number): ProcessForecastRecord | undefined {
    return this.processes.get(pid)?.latest;
  }
}

function insertSorted(times: number[], t: number): void {
  let i = times.length;
  while (i > 0 && times[i - 1]! > t) i--;
  times.splice(i, 0, t);
}
