/**
 * The verdict on one destination running out of ephemeral ports: the
 * port-pressure record, its forecast and its remedies. Pure: the port watcher
 * feeds it the counts (port-usage.ts) and the close rates (port-closes.ts).
 */
import type { PortSysctls } from './port-sysctls';
import { splitEndpoint, twReuseApplies, type NetnsPorts, type RemotePorts } from './port-usage';
import { TIME_WAIT_MS } from '../tcp-states';

/** A process that closes connections to the destination first, leaving TIME_WAIT behind. */
export interface PortCloser {
  pid: number;
  comm: string;
  /** Active closes per second to this destination (recent window). */
  ratePerSec: number;
}

/** A destination whose ephemeral ports are at least 80% used (`sockleak watch`). */
export interface PortPressureRecord {
  type: 'port-pressure';
  netns: number;
  remote: string;
  timeWait: number;
  established: number;
  /** Ports connect() can still pick for this destination. */
  free: number;
  /** Ports connect() picks from in this netns (range minus reserved and bound). */
  usable: number;
  /** net.ipv4.ip_local_port_range of the netns. */
  range: [number, number];
  twReuse: 0 | 1 | 2;
  /** Active closes per second to this destination, all processes: each leaves a TIME_WAIT for 60 s. */
  ratePerSec: number;
  closers: PortCloser[];
  /** connect() failures with EADDRNOTAVAIL to this destination in the last 10 s. */
  recentFailures: number;
  /** Seconds until no port is left at the current rate; 0: exhausted now; null: the current rate levels off below the range. */
  exhaustInSec: number | null;
  /** ms until the oldest TIME_WAIT to it expires and gives a port back. */
  nextFreeInMs: number | null;
  /** The forecast in one sentence. */
  forecast: string;
  /** What would stop it, most effective first. */
  remedies: string[];
}

const TIME_WAIT_S = TIME_WAIT_MS / 1000;

function rate(n: number): string {
  return n >= 10 ? String(Math.round(n)) : n.toFixed(1);
}

/** When the ports run out at `ratePerSec` new TIME_WAITs per second (see PortPressureRecord.exhaustInSec). */
export function exhaustInSec(r: RemotePorts, usable: number, ratePerSec: number): number | null {
  if (r.free === 0) return 0;
  // In the steady state rate x 60 s ports sit in TIME_WAIT; below the range it never runs out.
  if (ratePerSec <= 0 || ratePerSec * TIME_WAIT_S + r.established + r.other <= usable) return null;
  return Math.max(1, Math.ceil(r.free / ratePerSec));
}

function forecast(r: RemotePorts, usable: number, ratePerSec: number, inSec: number | null): string {
  if (inSec === 0) {
    const back = r.nextFreeInMs === null ? '' : `; the oldest TIME_WAIT gives a port back in ~${Math.ceil(r.nextFreeInMs / 1000)}s`;
    return `the ${usable} ports for ${r.remote} are exhausted: connect() fails with EADDRNOTAVAIL${back}`;
  }
  if (inSec !== null) return `at the current rate (${rate(ratePerSec)}/s), the range for ${r.remote} is exhausted in ~${inSec}s`;
  return `at the current rate (${rate(ratePerSec)}/s), TIME_WAIT to ${r.remote} levels off at ~${Math.round(ratePerSec * TIME_WAIT_S)} of ${usable} ports`;
}

function remedies(ns: NetnsPorts, r: RemotePorts, sysctls: PortSysctls, ratePerSec: number, closers: readonly PortCloser[]): string[] {
  const who = closers.length
    ? closers.slice(0, 3).map((c) => `pid ${c.pid} (${c.comm}) closes ${rate(c.ratePerSec)}/s`).join(', ')
    : 'every connection the client closes first';
  const out = [
    `reuse connections (keep-alive, a connection pool): ${who} to ${r.remote}, each leaving a TIME_WAIT for ${TIME_WAIT_S}s`,
    `widen net.ipv4.ip_local_port_range in netns ${ns.netns} (now ${ns.portRange[0]} ${ns.portRange[1]}, ${ns.usablePorts} usable ports), e.g. sysctl -w net.ipv4.ip_local_port_range="10000 65000"`,
  ];
  const timestamps = sysctls.timestamps ? '' : ' (it needs net.ipv4.tcp_timestamps=1, now 0)';
  if (!twReuseApplies({ ...sysctls, timestamps: true }, '', splitEndpoint(r.remote).host)) {
    out.push(
      `set net.ipv4.tcp_tw_reuse=1 in netns ${ns.netns} (now ${sysctls.twReuse}): connect() may then take over TIME_WAIT ports idle for over ${sysctls.twReuseDelayMs / 1000}s${timestamps}`,
    );
  } else if (timestamps) {
    out.push(`tcp_tw_reuse=${sysctls.twReuse} cannot apply in netns ${ns.netns}${timestamps}`);
  }
  const pace = Math.max(1, Math.floor(ns.usablePorts / TIME_WAIT_S));
  out.push(`pace the client below ${pace} new connections/s to ${r.remote} (${ns.usablePorts} ports / ${TIME_WAIT_S}s TIME_WAIT${ratePerSec > 0 ? `; now ${rate(ratePerSec)}/s` : ''})`);
  return out;
}

/** The port-pressure record for destination `r` of netns `ns`. */
export function pressureRecord(
  ns: NetnsPorts,
  r: RemotePorts,
  sysctls: PortSysctls,
  closers: readonly PortCloser[],
  recentFailures: number,
): PortPressureRecord {
  const ratePerSec = closers.reduce((n, c) => n + c.ratePerSec, 0);
  const inSec = exhaustInSec(r, ns.usablePorts, ratePerSec);
  return {
    type: 'port-pressure',
    netns: ns.netns,
    remote: r.remote,
    timeWait: r.timeWait,
    established: r.established,
    free: r.free,
    usable: ns.usablePorts,
    range: [...ns.portRange],
    twReuse: ns.twReuse,
    ratePerSec: Math.round(ratePerSec * 10) / 10,
    closers: [...closers],
    recentFailures,
    exhaustInSec: inSec,
    nextFreeInMs: r.nextFreeInMs,
    forecast: forecast(r, ns.usablePorts, ratePerSec, inSec),
    remedies: remedies(ns, r, sysctls, ratePerSec, closers),
  };
}
