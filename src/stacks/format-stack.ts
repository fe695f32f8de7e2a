/** A creator stack as one line people read: `open_backend (leak.c:21) <- worker_loop (leak.c:40)`. */
import type { Creator, Frame } from '../sockets';

function frameText(f: Frame): string {
  const where = f.file !== undefined && f.line !== undefined ? ` (${f.file.slice(f.file.lastIndexOf('/') + 1)}:${f.line})` : '';
  const name = f.symbol === '??' ? `${f.module.slice(f.module.lastIndexOf('/') + 1)}+${f.addr}` : f.symbol;
  return `${name}${where}`;
}

/**
 * The creating call site, innermost first, at most `frames` frames; null when
 * the creator has no stack. A stack cut short says so rather than end as if complete.
 */
export function formatCreatorStack(creator: Creator | null | undefined, frames = 3): string | null {
  const stack = creator?.stack;
  if (!stack || stack.length === 0) return null;
  const shown = stack.slice(0, frames).map(frameText).join(' <- ');
  const more = stack.length > frames ? ' <- …' : '';
  return `${shown}${more}${creator.stackTruncated ? ' (stack cut short: no frame pointers past here)' : ''}`;
}
