/**
 * TIME_WAIT a process tree produced, from the kernel's active-close counts
 * (bpf/ports.bpf.h, decoded by port-closes.ts): the side that closes an
 * established connection first ends in TIME_WAIT, so each ESTABLISHED ->
 * FIN_WAIT1 a process caused is one TIME_WAIT socket it left behind.
 */
import type { ActiveCloseCount } from '../ports/port-closes';

/** What `sockleak run --time-wait-budget N` reports. */
export interface TimeWaitReport {
  budget: number;
  /** TIME_WAIT sockets the tree produced (connections it closed first) during the run. */
  produced: number;
  exceeded: boolean;
  /** Per process and destination, largest first. */
  byDestination: ActiveCloseCount[];
}

/** The tree's share of the active closes (counted since the tracer loaded), against the budget. */
export function timeWaitReport(closes: readonly ActiveCloseCount[], members: ReadonlySet<number>, budget: number): TimeWaitReport {
  const byDestination = closes.filter((c) => members.has(c.pid)).sort((a, b) => b.count - a.count);
  const produced = byDestination.reduce((sum, c) => sum + c.count, 0);
  return { budget, produced, exceeded: produced > budget, byDestination };
}
