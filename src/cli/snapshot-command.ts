/** `sockleak snapshot`: every leaked (CLOSE_WAIT by default) socket now, grouped the way an operator thinks. */
import { snapshot } from '../snapshot';
import type { TcpState } from '../tcp-states';
import { groupSockets, renderGroups, summarize } from './leak-groups';
import { write } from './output';

export interface SnapshotCommandOptions {
  state?: TcpState[] | 'all';
  pid?: number;
  olderThan?: number;
  json?: boolean;
}

export async function snapshotCommand(options: SnapshotCommandOptions): Promise<number> {
  const result = await snapshot({
    states: options.state ?? ['CLOSE_WAIT'],
    ...(options.pid !== undefined && { pid: options.pid }),
    ...(options.olderThan !== undefined && { olderThanMs: options.olderThan }),
  });
  if (options.json) {
    await write(`${JSON.stringify(result)}\n`);
    return 0;
  }
  if (result.sockets.length === 0) {
    await write(`no matching sockets (${result.takenAt})\n`);
    return 0;
  }
  const groups = groupSockets(result.sockets);
  await write(`${renderGroups(groups)}\n${summarize(groups).join('\n')}\n`);
  await write(`${result.sockets.length} sockets at ${result.takenAt}; ages marked ~ are estimates from the kernel's last-packet time\n`);
  return 0;
}
