/**
 * What the agent streams and records, as TypeScript records: the leak engine's
 * records and the port tracker's (src/watch/port-watch.ts), and the ports snapshot of
 * `sockleak ports`, and the fd forecasts (src/forecast/). One place to import them from inside src/agent/.
 */
import type { WatchRecord } from '../watch-records';
import type { PortRecord } from '../ports/port-watcher';
import type { ProcessForecastRecord } from '../forecast/fd-forecast';

export type { PortFailureRecord, PortRecord } from '../ports/port-watcher';
export type { PortCloser, PortPressureRecord } from '../ports/port-pressure';
export type { NetnsPorts, RemotePorts, SourcePorts } from '../ports/port-usage';
export type { PortsSnapshot } from '../ports/ports';
export type { ProcessForecastRecord } from '../forecast/fd-forecast';

/** Every record the agent can take from its sources. */
export type AgentRecord = WatchRecord | PortRecord | ProcessForecastRecord;
