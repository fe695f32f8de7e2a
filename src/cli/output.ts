/** Writing to stdout with back-pressure, and surviving a closed pipe (`| head`). */

let closed = false;
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') closed = true;
  else throw err;
});

/** The line that says sockleak mounted tracefs (the guide: cope, and say so). */
export function tracefsNote(hooks: { mountedTracefs: boolean } | undefined): string {
  return hooks?.mountedTracefs
    ? 'sockleak: mounted tracefs on /sys/kernel/tracing for the per-syscall tracepoints (it stays mounted)\n'
    : '';
}

/** True once the reader of stdout has gone away. */
export function stdoutClosed(): boolean {
  return closed;
}

/** Writes `text` (or its bytes), waiting for the stream to drain when its buffer is full. */
export async function write(text: string | Uint8Array): Promise<void> {
  if (closed || text.length === 0) return;
  if (!process.stdout.write(text)) {
    await new Promise<void>((resolve) => {
      const done = (): void => {
        process.stdout.off('drain', done);
        process.stdout.off('error', done);
        resolve();
      };
      process.stdout.on('drain', done);
      process.stdout.on('error', done);
    });
  }
}
