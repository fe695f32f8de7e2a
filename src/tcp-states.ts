/**
 * Kernel TCP state numbers (include/net/tcp_states.h). They are ABI: the
 * sock/inet_sock_set_state tracepoint and sock_diag report them as is.
 */
export const TCP_STATES = [
  'UNKNOWN',
  'ESTABLISHED',
  'SYN_SENT',
  'SYN_RECV',
  'FIN_WAIT1',
  'FIN_WAIT2',
  'TIME_WAIT',
  'CLOSE',
  'CLOSE_WAIT',
  'LAST_ACK',
  'LISTEN',
  'CLOSING',
  'NEW_SYN_RECV',
] as const;

export type TcpState = (typeof TCP_STATES)[number];

/** The name of a kernel state number; 'UNKNOWN' outside the table. */
export function tcpStateName(n: number): TcpState {
  return TCP_STATES[n] ?? 'UNKNOWN';
}

/** The kernel number of a state name, or undefined. */
export function tcpStateNumber(name: string): number | undefined {
  const i = (TCP_STATES as readonly string[]).indexOf(name);
  return i > 0 ? i : undefined;
}
