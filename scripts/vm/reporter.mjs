// node --test reporter: one JSON line per finished test, for scripts/vm-test.sh.
// {file, name, nesting, status: "pass"|"fail"|"skip"|"todo", reason, ms}
// Suites and file-level wrappers are reported too (with their nesting); the
// table keeps only leaves.
import path from 'node:path';

export default async function* jsonLines(source) {
  for await (const event of source) {
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue;
    const d = event.data;
    let status = event.type === 'test:pass' ? 'pass' : 'fail';
    let reason = '';
    if (d.skip !== undefined && d.skip !== false) {
      status = 'skip';
      reason = typeof d.skip === 'string' ? d.skip : '';
    } else if (d.todo !== undefined && d.todo !== false) {
      status = 'todo';
      reason = typeof d.todo === 'string' ? d.todo : '';
    } else if (status === 'fail') {
      const err = d.details?.error;
      const cause = err?.cause ?? err;
      reason = String(cause?.message ?? cause ?? 'failed').split('\n').slice(0, 20).join('\n');
    }
    yield `${JSON.stringify({
      file: d.file ? path.basename(d.file) : '',
      name: d.name,
      nesting: d.nesting,
      status,
      reason,
      ms: Math.round(d.details?.duration_ms ?? 0),
      type: d.details?.type ?? 'test',
    })}\n`;
  }
}
