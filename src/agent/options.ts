/** What `startAgent()` takes, the bounds it checks, and what the agent reports when it stops. */
import { UsageError } from '../errors';
import type { AgentCounters } from '../recording/mapping';

export interface AgentOptions {
  /** Address to listen on. Default 127.0.0.1: the metrics name processes and peers, keep them local. */
  host?: string;
  /** Port; 0 picks a free one. Default 9466. */
  port?: number;
  /** Record to this file: created 0600, or appended to (a new session) when it holds a recording. */
  recordPath?: string;
  /** Rotate the recording to `recordPath`.1 before it grows past this, bytes. Default 256 MiB. */
  recordMaxBytes?: number;
  /** CLOSE_WAIT longer than this is a leak, ms. Default 30 s. */
  thresholdMs?: number;
  /** Most leaks tracked at once; beyond it the oldest reported is evicted and counted. Default 250000. */
  maxSockets?: number;
  /** Capture where in the code each leak was made (Creator.stack in the stream; never a metric label). Default false: it costs every connect() and accept(). */
  stacks?: boolean;
  /** Processes (and destinations) with their own metric series; the rest are summed as `other`. Default 10. */
  top?: number;
  /** Period of socket counts, Counters and Ports records, ms. Default 15 s. */
  intervalMs?: number;
  /** Period of Snapshot records in the recording after the first two, ms. Default 1 h. */
  snapshotEveryMs?: number;
  /** Bound of each /stream subscriber's queue, bytes. Default 4 MiB. */
  streamQueueBytes?: number;
  /** Most /stream subscribers at once. Default 16. */
  maxSubscribers?: number;
  /**
   * Count ephemeral ports per destination every minute, from the port watcher's
   * scan of the socket table: the TIME_WAIT and free-port metrics and a Ports
   * record. Default true. Connect failures and port pressure come from the
   * engine either way.
   */
  ports?: boolean;
  btfPath?: string;
  /**
   * A web configuration file in the Prometheus exporters' format
   * (exporter-toolkit's `--web.config.file`): TLS, client certificates, basic
   * auth with bcrypt hashes. Read at start; a bad file throws ConfigError.
   */
  webConfigFile?: string;
}

/** Throws UsageError for an option outside its bounds. */
export function validate(o: AgentOptions): void {
  const checks: Array<[string, number | undefined, number, number]> = [
    ['port', o.port, 0, 65535],
    ['threshold', o.thresholdMs, 0, 2 ** 40],
    ['maxSockets', o.maxSockets, 1024, 1 << 26],
    ['top', o.top, 1, 1000],
    ['interval', o.intervalMs, 100, 2 ** 31 - 1],
    ['snapshotEvery', o.snapshotEveryMs, 1000, 2 ** 31 - 1],
    ['streamQueueBytes', o.streamQueueBytes, 4096, 2 ** 32],
    ['maxSubscribers', o.maxSubscribers, 1, 1024],
    ['recordMaxBytes', o.recordMaxBytes, 1 << 20, 2 ** 48],
  ];
  for (const [name, v, min, max] of checks) {
    if (v !== undefined && (!Number.isSafeInteger(v) || v < min || v > max)) throw new UsageError(`${name} must be an integer in ${min}..${max}, got ${v}`);
  }
}

/** What the agent did, for the CLI's last line. */
export interface AgentStatus extends AgentCounters {
  leaksOpen: number;
  records: number;
  recordingBytes: number;
  /** Times the recording was rotated to FILE.1. */
  recordingRotations: number;
  recordingError: Error | undefined;
}
