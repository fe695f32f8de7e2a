/**
 * `watchWithPorts()`: the leak engine's CLOSE_WAIT records (leak-engine.ts) and the PortWatcher's
 * connect-failure and port-pressure records, from one leak-mode tracer, as one
 * async-iterable stream (what `sockleak watch` prints). With `onPortScan`, a
 * lean scan of the whole socket table (port-scan.ts) is handed over once per
 * `ports.scanMs`, for a caller that counts ports per destination (the agent).
 */
import type { CgroupFields } from '../scan/cgroups';
import type { CookieKey } from '../cookie-map';
import type { TraceCounters } from '../events';
import type { TracerHooks } from '../trace/tracer';
import { Fifo } from '../fifo';
import type { Owner } from '../sockets';
import { startLeakEngine, type LeakEngine } from './leak-engine';
import type { WatchOptions } from './leak-watcher';
import type { LeakRecord, WatchRecord } from '../watch-records';
import { PortSocketScanner } from '../ports/port-scan';
import type { PortSocket } from '../ports/port-usage';
import { PortWatcher, type PortRecord, type PortWatchOptions } from '../ports/port-watcher';
import { FdForecaster, type FdForecastOptions, type ProcessForecastRecord } from '../forecast/fd-forecast';

/** Every record of the stream: leaks, ports, fd forecasts. */
export type WatchStreamRecord = WatchRecord | PortRecord | ProcessForecastRecord;

/** Fd-exhaustion forecast settings of watchWithPorts(); the threshold is the leak watcher's. */
export interface ForecastWatchOptions extends Omit<FdForecastOptions, 'thresholdMs'> {
  /** How often /proc is read for the leaking processes and the forecasts are redone, ms. Default 5000. */
  intervalMs?: number;
}

/** How often the forecasts are redone when `forecast.intervalMs` is not set. */
const FORECAST_MS = 5000;

/** Options of watchWithPorts(): the leak watcher's, plus the port watcher's under `ports`. */
export interface PortAwareWatchOptions extends WatchOptions {
  /** Port-exhaustion settings; `pid` and `btfPath` default to the leak watcher's. */
  ports?: PortWatchOptions;
  /** Receives a scan of the whole socket table, by netns inode, every `ports.scanMs` (default one a minute), the first once the leak engine's first step is over. */
  onPortScan?: (scanned: ReadonlyMap<number, Iterable<PortSocket>>) => void;
  /** Per-process fd-exhaustion forecasts (`forecast` records); false: none. */
  forecast?: ForecastWatchOptions | false;
}

/** How often onPortScan gets a scan when `ports.scanMs` is not set. */
const PORT_SCAN_MS = 60_000;

/** Leak and port records, in the order they were produced. Iterate it; close() to stop. */
export class PortAwareWatcher implements AsyncIterable<WatchStreamRecord> {
  private readonly leaks: LeakEngine;
  private readonly ports: PortWatcher;
  private readonly portScanner: PortSocketScanner | undefined;
  private portTimer: NodeJS.Timeout | undefined;
  private readonly forecaster: FdForecaster | undefined;
  private forecastTimer: NodeJS.Timeout | undefined;
  private portScanning: Promise<void> | undefined;
  private readonly out = new Fifo<WatchStreamRecord>();
  private wake: (() => void) | undefined;
  private ended = false;
  /** The engine ended: no new port scan starts. */
  private stopping = false;
  private failure: unknown;
  private readonly pumping: Promise<void>;

  constructor(options: PortAwareWatchOptions = {}) {
    const { ports: portOptions, onPortScan, forecast: forecastOptions, ...leakOptions } = options;
    let ports: PortWatcher | undefined;
    // Events arrive on later turns of the event loop, after `ports` is set below.
    this.leaks = startLeakEngine({ ...leakOptions, onPortEvent: (ev) => ports?.onPortEvent(ev) });
    let scanner: PortSocketScanner | undefined;
    try {
      ports = new PortWatcher(
        {
          ...(options.pid !== undefined && { pid: options.pid }),
          ...(options.btfPath !== undefined && { btfPath: options.btfPath }),
          ...portOptions,
        },
        {
          activeCloses: () => this.leaks.activeCloses(),
          emit: (record) => this.emit(record),
          fail: (err) => this.fail(err),
        },
      );
      if (onPortScan) {
        // The caller counts ports itself (the agent's Ports record): one lean scan of the whole table per interval.
        scanner = new PortSocketScanner(options.btfPath !== undefined ? { btfPath: options.btfPath } : {});
        const portScanner = scanner;
        const scan = (): void => {
          if (this.portScanning || this.stopping) return;
          this.portScanning = portScanner
            .scan()
            .then((sockets) => onPortScan(sockets))
            .catch((err: unknown) => this.fail(err))
            .finally(() => (this.portScanning = undefined));
        };
        // The first once the engine's first step is over: at a restart, its burst of leaks and a count of the whole table would add up.
        void this.leaks.firstStep.then(() => {
          if (this.stopping) return;
          this.portTimer = setInterval(scan, portOptions?.scanMs ?? PORT_SCAN_MS);
          scan();
        });
      }
    } catch (err) {
      scanner?.close();
      void ports?.close();
      void this.leaks.close();
      throw err;
    }
    this.ports = ports;
    this.portScanner = scanner;
    if (forecastOptions !== false) {
      const { intervalMs, ...rest } = forecastOptions ?? {};
      const forecaster = new FdForecaster({ thresholdMs: leakOptions.thresholdMs ?? 30_000, ...rest });
      this.forecaster = forecaster;
      this.forecastTimer = setInterval(() => {
        for (const record of forecaster.evaluate()) this.emit(record);
      }, intervalMs ?? FORECAST_MS);
    }
    this.pumping = this.pump();
  }

  /** Leaks currently open (see LeakWatcher.current()). */
  current(): LeakRecord[] {
    return this.leaks.current();
  }

  /** One open leak as a full record (see LeakWatcher.leak()). */
  leak(cookie: CookieKey): LeakRecord | undefined {
    return this.leaks.leak(cookie);
  }

  /** The holders of an open leak, not copied (see LeakWatcher.owners()). */
  owners(cookie: CookieKey): readonly Owner[] | undefined {
    return this.leaks.owners(cookie);
  }

  /** When an open leak entered CLOSE_WAIT, CLOCK_MONOTONIC ns (see LeakWatcher.enteredNs()). */
  enteredNs(cookie: CookieKey): number | undefined {
    return this.leaks.enteredNs(cookie);
  }

  /** Open leaks now (see LeakWatcher.size). */
  get size(): number {
    return this.leaks.size;
  }

  /** Open leaks' cookies in report order, pulled lazily (see LeakWatcher.openCookies()). */
  openCookies(): Iterable<CookieKey> {
    return this.leaks.openCookies();
  }

  /** The oldest-reported open leak (see LeakWatcher.oldestReported()). */
  oldestReported(): CookieKey | undefined {
    return this.leaks.oldestReported();
  }

  /** Every holder of every open leak (see LeakWatcher.forEachHolder()). */
  forEachHolder(each: (pid: number, comm: string, first: boolean, place: CgroupFields | undefined) => void): void {
    this.leaks.forEachHolder(each);
  }

  /** Open leaks per remote endpoint (see LeakTable.countByRemote()). */
  countByRemote(): Map<string, number> {
    return this.leaks.countByRemote();
  }

  /** The earliest time an open leak entered CLOSE_WAIT (see LeakWatcher.oldestEnteredNs()). */
  oldestEnteredNs(): number | undefined {
    return this.leaks.oldestEnteredNs();
  }

  /** Stops following an open leak (see LeakWatcher.evict()). */
  evict(cookie: CookieKey): void {
    this.leaks.evict(cookie);
  }

  /** The latest fd-exhaustion forecast of each process holding leaks (empty with `forecast: false`). */
  forecasts(): ProcessForecastRecord[] {
    return this.forecaster?.current() ?? [];
  }

  /** How the tracer hooks syscalls (see LeakWatcher.hooks()). */
  hooks(): TracerHooks | undefined {
    return this.leaks.hooks();
  }

  /** The tracer's counters: failure counts are exact only while `lost` stays 0. */
  counters(): TraceCounters {
    return this.leaks.counters();
  }

  /** A scan or read failed: everything stops, and the iterator throws it. */
  private fail(err: unknown): void {
    this.failure ??= err;
    void this.leaks.close();
  }

  private emit(record: WatchStreamRecord): void {
    this.out.push(record);
    this.wake?.();
  }

  private async pump(): Promise<void> {
    try {
      for await (const record of this.leaks) {
        if (record.type === 'leak') this.forecaster?.observe(record);
        this.emit(record);
      }
    } catch (err) {
      this.failure ??= err;
    } finally {
      this.stopping = true;
      clearInterval(this.forecastTimer);
      await this.ports.close(); // after the tracer's last events: the final failure counts
      clearInterval(this.portTimer);
      await this.portScanning;
      this.portScanner?.close();
      this.ended = true;
      this.wake?.();
    }
  }

  /** Stops both watchers; the iterator ends after every record already produced. */
  async close(): Promise<void> {
    await this.leaks.close();
    await this.pumping;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<WatchStreamRecord> {
    try {
      for (;;) {
        const next = this.out.shift();
        if (next) {
          yield next;
          continue;
        }
        if (this.ended) {
          if (this.failure) throw this.failure;
          return;
        }
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = undefined;
      }
    } finally {
      await this.close();
    }
  }
}

/** Starts watching CLOSE_WAIT leaks and ephemeral-port exhaustion. Throws a SockleakError subclass on bad options or environment. */
export function watchWithPorts(options: PortAwareWatchOptions = {}): PortAwareWatcher {
  return new PortAwareWatcher(options);
}
