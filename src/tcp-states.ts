import { TCP_STATE } from './generated/layout';

/** A kernel TCP state's name; 'UNKNOWN' for a number that is none. */
export type TcpState = 'UNKNOWN' | keyof typeof TCP_STATE;

/**
 * Kernel TCP state names indexed by number (include/net/tcp_states.h, via
 * enum sl_tcp_state of bpf/sockleak.h). They are ABI: the
 * sock/inet_sock_set_state tracepoint and sock_diag report them as is.
 */
export const TCP_STATES: readonly TcpState[] = (() => {
  const names: TcpState[] = ['UNKNOWN'];
  for (const [name, n] of Object.entries(TCP_STATE) as [keyof typeof TCP_STATE, number][]) names[n] = name;
  return names;
})();

/** The name of a kernel state number; 'UNKNOWN' outside the table. */
export function tcpStateName(n: number): TcpState {
  return TCP_STATES[n] ?? 'UNKNOWN';
}

/** The kernel number of a state name, or undefined. */
export function tcpStateNumber(name: string): number | undefined {
  const i = (TCP_STATES as readonly string[]).indexOf(name);
  return i > 0 ? i : undefined;
}

/** How long a TIME_WAIT socket lives (the kernel's TCP_TIMEWAIT_LEN, 60 s): its timer counts down from it. */
export const TIME_WAIT_MS = 60_000;
