/**
 * Buffers of one size that ended connections leave for new ones: under
 * connection churn, allocating a read buffer and a write buffer per
 * connection kept the garbage collector busy.
 *
 * @module
 */

/** At most `max` idle buffers of exactly `size` bytes. */
export class BufferPool {
  readonly size: number;
  readonly #max: number;
  readonly #idle: Uint8Array[] = [];

  constructor(size: number, max: number) {
    this.size = size;
    this.#max = max;
  }

  /** Bytes held by the idle buffers. */
  get idleBytes(): number {
    return this.#idle.length * this.size;
  }

  /** An idle buffer, or a new one. */
  take(): Uint8Array {
    return this.#idle.pop() ?? new Uint8Array(this.size);
  }

  /**
   * Gives back a buffer nothing reads or writes any more and no view of
   * which is kept. Anything but a whole buffer of `size` bytes is dropped.
   */
  give(buffer: Uint8Array): void {
    if (
      buffer.length === this.size && buffer.byteOffset === 0 &&
      buffer.buffer.byteLength === this.size && this.#idle.length < this.#max
    ) this.#idle.push(buffer);
  }
}
