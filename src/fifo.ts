/**
 * A first-in first-out queue for record streams. Array.prototype.shift() moves
 * every remaining element once an array is large, so draining N records costs
 * O(N²): minutes for the 200k leaks of the first incident. Here taking is O(1).
 */
export class Fifo<T> {
  private items: Array<T | undefined> = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  /** The oldest item, removed; undefined when empty. */
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head++] = undefined; // let it be collected
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head >= 4096 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head); // amortised: at most once per head's worth of takes
      this.head = 0;
    }
    return item;
  }
}
