/**
 * Reading an HTTP head off a connection, bounded in size.
 *
 * @module
 */

import { HEAD_READ } from "./buffers.ts";
import { findHeadEnd, type HeadError, RequestLineChecker } from "./http.ts";

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

/**
 * Reads until `\r\n\r\n`. Resolves `"too_large"` when `maxSize` bytes came
 * without the end of the head, `"eof"` when the peer closed first. Throws
 * what `conn.read` throws (reset, or the conn closed by a timeout).
 * `prefix` holds bytes of the head already read off `conn` (what a proxy
 * sent after its `200` to `CONNECT`).
 */
export function readHead(
  conn: Deno.Conn,
  maxSize: number,
  prefix?: Uint8Array,
): Promise<HeadRead | "too_large" | "eof"> {
  return read(conn, maxSize, null, prefix) as Promise<
    HeadRead | "too_large" | "eof"
  >;
}

/**
 * {@linkcode readHead} for a server: also checks the request line as each
 * read arrives (see {@linkcode RequestLineChecker}), and resolves with the
 * 400 to answer as soon as the bytes cannot be an HTTP/1.x request. The
 * request line may take at most 8 KiB, or `maxSize` if that is smaller.
 */
export function readRequestHead(
  conn: Deno.Conn,
  maxSize: number,
): Promise<HeadRead | "too_large" | "eof" | HeadError> {
  return read(
    conn,
    maxSize,
    new RequestLineChecker(Math.min(MAX_REQUEST_LINE, maxSize)),
  );
}

/** Most bytes of a request line, CRLF included. */
const MAX_REQUEST_LINE = 8 * 1024;

async function read(
  conn: Deno.Conn,
  maxSize: number,
  checker: RequestLineChecker | null,
  prefix?: Uint8Array,
): Promise<HeadRead | "too_large" | "eof" | HeadError> {
  // Small, and the socket's own afterwards when it is small enough: most
  // heads fit, and a bigger one grows it.
  let buffer = new Uint8Array(Math.max(HEAD_READ, prefix?.length ?? 0));
  let length = 0;
  if (prefix !== undefined) {
    buffer.set(prefix);
    length = prefix.length;
  }
  let scanned = 0;
  for (;;) {
    let n = length - scanned;
    if (n === 0) {
      if (length === buffer.length) {
        const bigger = new Uint8Array(
          Math.min(buffer.length * 2, maxSize + 4096),
        );
        bigger.set(buffer);
        buffer = bigger;
      }
      // The buffer and bounds rather than subarrays: three fewer objects
      // per connection.
      const read = await conn.read(
        length === 0 ? buffer : buffer.subarray(length),
      );
      if (read === null) return "eof";
      length += n = read;
    }
    if (checker !== null && !checker.done) {
      const error = checker.check(buffer, length - n, length);
      if (error !== null) return error;
    }
    const end = findHeadEnd(buffer, scanned - 3, length);
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
