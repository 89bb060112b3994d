/**
 * The per-socket read queue: messages decoded ahead of `read()`, with the
 * count of their bytes for backpressure.
 *
 * @module
 */

const DONE: IteratorReturnResult<undefined> = Object.freeze({
  done: true,
  value: undefined,
});

/**
 * Marks the next reader in the queue as one of `next()`, which resolves
 * with an iterator result: no wrapper closure per waiting `next()` (one
 * waits on every idle socket read with `for await`).
 */
const NEXT = Symbol("next");

type Reader = ((value: unknown) => void) | typeof NEXT;

/** A FIFO of items with async reads; `null` after `end()` once drained. */
export class ReadQueue<T> {
  #items: (T | undefined)[] = [];
  #head = 0;
  #sizes: number[] = [];
  #bytes = 0;
  #ended = false;
  // The first waiting reader (most of the time the only one) and whether
  // it came from next(); more wait in #readers. An array of its own cost
  // each idle socket about 200 bytes.
  #reader: ((value: unknown) => void) | null = null;
  #readerNext = false;
  #readers: Reader[] | null = null;
  #drainWaiter: (() => void) | null = null;
  #lowWaterMark = 0;

  /** Bytes of the queued items not read yet. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Adds an item of `size` bytes, handing it to a waiting reader if any. */
  push(item: T, size: number): void {
    if (this.#ended) return;
    if (this.#reader !== null) {
      this.#wake(item);
      return;
    }
    this.#items.push(item);
    this.#sizes.push(size);
    this.#bytes += size;
  }

  /** No more items will come: readers get `null` after the queued ones. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    while (this.#reader !== null) this.#wake(null);
    this.#wakeDrain();
  }

  /** The next item, waiting for one if needed; `null` once ended and empty. */
  read(): Promise<T | null> {
    if (this.#head < this.#items.length) return Promise.resolve(this.#take());
    if (this.#ended) return Promise.resolve(null);
    return new Promise((resolve) =>
      this.#wait(resolve as (value: unknown) => void, false)
    );
  }

  /** Like {@linkcode read}, shaped for async iteration (one promise per item). */
  next(): Promise<IteratorResult<T, undefined>> {
    if (this.#head < this.#items.length) {
      return Promise.resolve({ done: false, value: this.#take() });
    }
    if (this.#ended) return Promise.resolve(DONE);
    return new Promise((resolve) =>
      this.#wait(resolve as (value: unknown) => void, true)
    );
  }

  #wait(resolve: (value: unknown) => void, next: boolean): void {
    if (this.#reader === null) {
      this.#reader = resolve;
      this.#readerNext = next;
    } else if (next) (this.#readers ??= []).push(NEXT, resolve);
    else (this.#readers ??= []).push(resolve);
  }

  /** Hands `item` (`null`: the end) to the first waiting reader. */
  #wake(item: T | null): void {
    const reader = this.#reader!;
    const next = this.#readerNext;
    const readers = this.#readers;
    if (readers === null || readers.length === 0) this.#reader = null;
    else {
      const first = readers.shift()!;
      this.#readerNext = first === NEXT;
      this.#reader = (first === NEXT ? readers.shift() : first) as (
        value: unknown,
      ) => void;
    }
    reader(next ? (item === null ? DONE : { done: false, value: item }) : item);
  }

  /**
   * Resolves once the queued bytes fall to `lowWaterMark` or less, or the
   * queue ends.
   */
  drained(lowWaterMark: number): Promise<void> {
    if (this.#bytes <= lowWaterMark || this.#ended) return Promise.resolve();
    this.#lowWaterMark = lowWaterMark;
    return new Promise((resolve) => this.#drainWaiter = resolve);
  }

  #take(): T {
    const index = this.#head;
    const item = this.#items[index] as T;
    this.#items[index] = undefined;
    this.#bytes -= this.#sizes[index];
    this.#head = index + 1;
    if (this.#head === this.#items.length) {
      this.#items.length = 0;
      this.#sizes.length = 0;
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items.splice(0, this.#head);
      this.#sizes.splice(0, this.#head);
      this.#head = 0;
    }
    if (this.#drainWaiter !== null && this.#bytes <= this.#lowWaterMark) {
      this.#wakeDrain();
    }
    return item;
  }

  #wakeDrain(): void {
    const waiter = this.#drainWaiter;
    this.#drainWaiter = null;
    waiter?.();
  }
}
