/** Kernel timestamps (bpf_ktime_get_ns) are CLOCK_MONOTONIC, as is process.hrtime. */

/** Nanoseconds of CLOCK_MONOTONIC now. */
export function monotonicNowNs(): number {
  return Number(process.hrtime.bigint());
}

/** Add to a CLOCK_MONOTONIC time in ms to get Unix epoch ms. */
export function monotonicToEpochMs(): number {
  return Date.now() - monotonicNowNs() / 1e6;
}
