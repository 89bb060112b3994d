/**
 * Reading an HTTP head off a connection, bounded in size.
 *
 * @module
 */

import { findHeadEnd } from "./handshake.ts";

/** An HTTP head and the bytes that came after it in the same reads. */
export interface HeadRead {
  head: Uint8Array;
  rest: Uint8Array;
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
  let buffer = new Uint8Array(Math.min(maxSize + 4096, 4096));
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
      // The rest is copied out so the socket owns it independently.
      return { head: buffer.subarray(0, end), rest: buffer.slice(end, length) };
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
