/**
 * What the agent streams and records, as TypeScript records: the leak engine's
 * records and the port tracker's (src/port-watch.ts), and the ports snapshot of
 * `sockleak ports`. One place to import them from inside src/agent/.
 */
import type { WatchRecord } from '../watch-records';
import type { PortRecord } from '../port-watcher';

export type { PortFailureRecord, PortRecord } from '../port-watcher';
export type { PortCloser, PortPressureRecord } from '../port-pressure';
export type { NetnsPorts, RemotePorts, SourcePorts } from '../port-usage';
export type { PortsSnapshot } from '../ports';

/** Every record the agent can take from its sources. */
export type AgentRecord = WatchRecord | PortRecord;
