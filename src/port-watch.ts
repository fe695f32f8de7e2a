/**
 * `watchWithPorts()`: the LeakWatcher's CLOSE_WAIT records and the PortWatcher's
 * connect-failure and port-pressure records, from one leak-mode tracer, as one
 * async-iterable stream (what `sockleak watch` prints).
 */
import type { TraceCounters } from './events';
import { Fifo } from './fifo';
import { LeakWatcher, type LeakRecord, type WatchOptions, type WatchRecord } from './leak-watcher';
import { PortWatcher, type PortRecord, type PortWatchOptions } from './port-watcher';

/** Options of watchWithPorts(): the leak watcher's, plus the port watcher's under `ports`. */
export interface PortAwareWatchOptions extends WatchOptions {
  /** Port-exhaustion settings; `pid` and `btfPath` default to the leak watcher's. */
  ports?: PortWatchOptions;
}

/** Leak and port records, in the order they were produced. Iterate it; close() to stop. */
export class PortAwareWatcher implements AsyncIterable<WatchRecord | PortRecord> {
  private readonly leaks: LeakWatcher;
  private readonly ports: PortWatcher;
  private readonly out = new Fifo<WatchRecord | PortRecord>();
  private wake: (() => void) | undefined;
  private ended = false;
  private failure: unknown;
  private readonly pumping: Promise<void>;

  constructor(options: PortAwareWatchOptions = {}) {
    const { ports: portOptions, ...leakOptions } = options;
    let ports: PortWatcher | undefined;
    // Events arrive on later turns of the event loop, after `ports` is set below.
    this.leaks = new LeakWatcher({ ...leakOptions, onPortEvent: (ev) => ports?.onPortEvent(ev) });
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
          fail: (err) => {
            this.failure ??= err;
            void this.leaks.close();
          },
        },
      );
    } catch (err) {
      void this.leaks.close();
      throw err;
    }
    this.ports = ports;
    this.pumping = this.pump();
  }

  /** Leaks currently open (see LeakWatcher.current()). */
  current(): LeakRecord[] {
    return this.leaks.current();
  }

  /** The tracer's counters: failure counts are exact only while `lost` stays 0. */
  counters(): TraceCounters {
    return this.leaks.counters();
  }

  private emit(record: WatchRecord | PortRecord): void {
    this.out.push(record);
    this.wake?.();
  }

  private async pump(): Promise<void> {
    try {
      for await (const record of this.leaks) this.emit(record);
    } catch (err) {
      this.failure ??= err;
    } finally {
      await this.ports.close(); // after the tracer's last events: the final failure counts
      this.ended = true;
      this.wake?.();
    }
  }

  /** Stops both watchers; the iterator ends after every record already produced. */
  async close(): Promise<void> {
    await this.leaks.close();
    await this.pumping;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<WatchRecord | PortRecord> {
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
