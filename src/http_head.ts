/**
 * Reading an HTTP head off a connection, bounded in size.
 *
 * @module
 */

import { findHeadEnd } from "./handshake.ts";

/** An HTTP head and the bytes that came after it in the same reads. */
export interface HeadRead {
  head: Uint8Array;
  /** The bytes after the head: a view of `buffer`. */
  rest: Uint8Array;
  /**
   * The buffer read into. A socket reads on into it once it has processed
   * `rest` (which it copies what it keeps from), rather than allocating one.
   */
  buffer: Uint8Array;
}

/** The size of a connection's first read buffer (head, then frames). */
export const READ_BUFFER_SIZE = 8 * 1024;
const READ_POOL_MAX = 128;
const readPool: Uint8Array[] = [];

/**
 * A read buffer of {@linkcode READ_BUFFER_SIZE} bytes, from the buffers
 * of connections that ended if there are any: under connection churn,
 * allocating one per connection kept the garbage collector busy.
 */
export function takeReadBuffer(): Uint8Array {
  return readPool.pop() ?? new Uint8Array(READ_BUFFER_SIZE);
}

/**
 * Gives back the read buffer of a connection whose reading is over for
 * good (nothing reads into it and no view of it is kept).
 */
export function releaseReadBuffer(buffer: Uint8Array): void {
  if (
    buffer.length === READ_BUFFER_SIZE && buffer.byteOffset === 0 &&
    buffer.buffer.byteLength === READ_BUFFER_SIZE &&
    readPool.length < READ_POOL_MAX
  ) readPool.push(buffer);
}

/**
 * Reads until `\r\n\r\n`. Resolves `"too_large"` when `maxSize` bytes came
 * without the end of the head, `"eof"` when the peer closed first. Throws
 * what `conn.read` throws (reset, or the conn closed by a timeout).
 */
export async function readHead(
  conn: Deno.Conn,
  maxSize: number,
): Promise<HeadRead | "too_large" | "eof"> {
  // Room for the head plus the start of the first frame in the same read.
  let buffer = maxSize + 4096 >= READ_BUFFER_SIZE
    ? takeReadBuffer()
    : new Uint8Array(maxSize + 4096);
  let length = 0;
  let scanned = 0;
  for (;;) {
    if (length === buffer.length) {
      const bigger = new Uint8Array(
        Math.min(buffer.length * 2, maxSize + 4096),
      );
      bigger.set(buffer);
      buffer = bigger;
    }
    const n = await conn.read(buffer.subarray(length));
    if (n === null) return "eof";
    length += n;
    const end = findHeadEnd(buffer.subarray(0, length), scanned - 3);
    if (end !== -1) {
      if (end > maxSize) return "too_large";
      return {
        head: buffer.subarray(0, end),
        rest: buffer.subarray(end, length),
        buffer,
      };
    }
    scanned = length;
    if (length >= maxSize) return "too_large";
  }
}

/** Closes `conn`, ignoring that it may be closed already. */
export function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}
