/** Tables for people: cli-table3 with a compact frame (no rule between rows). */
import Table from 'cli-table3';

export function newTable(head: string[]): InstanceType<typeof Table> {
  return new Table({
    head,
    style: { head: [], border: [] },
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  });
}
