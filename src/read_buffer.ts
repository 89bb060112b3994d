/**
 * Which buffer a socket's next read goes into.
 *
 * Every read that may wait goes into the connection's own small buffer: a
 * pending read holds its buffer for as long as the peer is silent, and
 * most connections are silent most of the time. A read that fills its
 * buffer means more is waiting: the next one (which completes at once)
 * takes a pooled 8 KiB buffer, then bigger ones up to 256 KiB; a read that
 * drains the socket goes back to the small buffer.
 *
 * @module
 */

import { readBuffers, SMALL_READ } from "./http_head.ts";

/** The biggest buffer a read grows to. */
const READ_SIZE_MAX = 256 * 1024;

/**
 * The connection's own small buffer: the one its head was read into when
 * that was a small one, else a new one.
 */
export function smallReadBuffer(
  headBuffer: Uint8Array | undefined,
): Uint8Array {
  return headBuffer !== undefined && headBuffer.length === SMALL_READ
    ? headBuffer
    : new Uint8Array(SMALL_READ);
}

/**
 * The buffer for the next read after `n` bytes came into `buffer`: a
 * bigger one when they filled it, the small one when they did not.
 */
export function nextReadBuffer(
  buffer: Uint8Array,
  small: Uint8Array,
  n: number,
): Uint8Array {
  if (n === buffer.length) {
    if (buffer === small) return readBuffers.take();
    if (buffer.length >= READ_SIZE_MAX) return buffer;
    readBuffers.give(buffer);
    return new Uint8Array(buffer.length * 2);
  }
  // Drained with a little: quiet again. With more (a burst that fits),
  // the same buffer suits the next burst.
  if (n >= SMALL_READ) return buffer;
  if (buffer !== small) readBuffers.give(buffer);
  return small;
}

/**
 * Whether a read of `n` bytes into `buffer` (after one that `filled` its
 * buffer, or not) calls for another buffer: the tail of a burst that
 * filled the last buffer keeps the big one, as bursts of a few KiB would
 * otherwise take two reads each.
 */
export function needsOtherBuffer(
  buffer: Uint8Array,
  n: number,
  filled: boolean,
): boolean {
  return n === buffer.length || n >= SMALL_READ || !filled;
}

/** Gives a read buffer back once nothing reads into it or views it. */
export function releaseReadBuffer(buffer: Uint8Array): void {
  readBuffers.give(buffer);
}
