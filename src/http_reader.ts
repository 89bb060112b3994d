/**
 * The read side of a keep-alive HTTP/1.1 connection: one buffer that
 * request heads, request bodies and the next pipelined request are read
 * from, in order, and that an upgrade hands on to its socket.
 *
 * @module
 */

import {
  findHeadEnd,
  type HeadError,
  latin1,
  RequestLineChecker,
} from "./http.ts";

/** Most bytes of a request line, CRLF included (as for the first request). */
const MAX_REQUEST_LINE = 8 * 1024;

/**
 * Buffered reads from one connection. At most one `conn.read` is in flight:
 * a read started to notice the client leaving is the same read the next
 * head or body waits on.
 *
 * @example Two pipelined heads, read in turn
 * ```ts
 * import { ConnReader } from "./http_reader.ts";
 * import assert from "node:assert/strict";
 *
 * const bytes = new TextEncoder().encode(
 *   "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
 * );
 * // A connection that has sent everything already.
 * const conn = { read: () => Promise.resolve(null) } as unknown as Deno.Conn;
 * const reader = new ConnReader(conn, bytes, bytes, 4096);
 * const first = await reader.readHead(1024);
 * assert.ok(first instanceof Uint8Array);
 * assert.equal(new TextDecoder().decode(first), "GET /a HTTP/1.1\r\n\r\n");
 * assert.equal(reader.buffered, 19);
 * await reader.readHead(1024);
 * assert.equal(await reader.readHead(1024), "eof");
 * ```
 */
export class ConnReader {
  #conn: Deno.Conn;
  #buffer: Uint8Array;
  #start: number;
  #end: number;
  #filling: Promise<boolean> | null = null;
  #max: number;
  /** The peer closed its side (or the read failed): no more bytes come. */
  ended = false;

  /**
   * @param conn the connection
   * @param buffer the buffer already read into
   * @param rest the unread bytes: a view of `buffer`
   * @param max most bytes the buffer may grow to
   */
  constructor(
    conn: Deno.Conn,
    buffer: Uint8Array,
    rest: Uint8Array,
    max: number,
  ) {
    this.#conn = conn;
    this.#buffer = buffer;
    this.#start = rest.byteOffset - buffer.byteOffset;
    this.#end = this.#start + rest.length;
    this.#max = Math.max(max, buffer.length);
  }

  /** How many unread bytes are buffered. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** Whether a read would have room without growing the buffer. */
  get hasRoom(): boolean {
    return this.#end < this.#buffer.length || this.#start > 0;
  }

  /**
   * Reads more bytes into the buffer: false at EOF or when the read
   * failed (a reset, or the conn closed by a deadline). Never throws.
   */
  fill(): Promise<boolean> {
    if (this.#filling !== null) return this.#filling;
    if (this.ended) return Promise.resolve(false);
    if (this.#start === this.#end) {
      this.#start = this.#end = 0;
    } else if (this.#end === this.#buffer.length && this.#start > 0) {
      this.#buffer.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    if (this.#end === this.#buffer.length) {
      const size = Math.min(this.#buffer.length * 2, this.#max);
      if (size > this.#buffer.length) {
        const bigger = new Uint8Array(size);
        bigger.set(this.#buffer.subarray(0, this.#end));
        this.#buffer = bigger;
      }
    }
    // Full at its largest: nothing to read into (callers check first).
    if (this.#end === this.#buffer.length) return Promise.resolve(true);
    // A then, not an async function: one frame fewer per read.
    return this.#filling = this.#conn.read(this.#buffer.subarray(this.#end))
      .then(this.#onRead, this.#onError);
  }

  #onRead = (n: number | null): boolean => {
    this.#filling = null;
    if (n === null) {
      this.ended = true;
      return false;
    }
    this.#end += n;
    return true;
  };

  #onError = (): boolean => {
    this.#filling = null;
    this.ended = true;
    return false;
  };

  /** Grows the buffer to at least `size` bytes (for reading bodies). */
  reserve(size: number): void {
    if (this.#buffer.length >= size || this.#filling !== null) return;
    const bigger = new Uint8Array(size);
    bigger.set(this.#buffer.subarray(this.#start, this.#end));
    this.#end -= this.#start;
    this.#start = 0;
    this.#buffer = bigger;
  }

  /**
   * {@linkcode readHead} when the whole head is buffered already: the same
   * answer, without awaiting; `null` when more bytes are needed.
   */
  takeHead(maxSize: number): Uint8Array | "too_large" | HeadError | null {
    const available = this.#buffer.subarray(this.#start, this.#end);
    const end = findHeadEnd(available);
    if (end === -1) return null;
    const checker = new RequestLineChecker(
      Math.min(MAX_REQUEST_LINE, maxSize),
    );
    const error = checker.check(available.subarray(0, end));
    if (error !== null) return error;
    if (end > maxSize) return "too_large";
    this.#start += end;
    return available.subarray(0, end);
  }

  /**
   * Reads a request head, up to and with its blank line: a view of the
   * buffer, valid until the next read. Resolves
   * `"too_large"` when `maxSize` bytes came without its end, `"eof"` when
   * the connection ended first, or the 400 to answer as soon as the bytes
   * cannot be an HTTP/1.x request line.
   */
  async readHead(
    maxSize: number,
  ): Promise<Uint8Array | "too_large" | "eof" | HeadError> {
    const checker = new RequestLineChecker(
      Math.min(MAX_REQUEST_LINE, maxSize),
    );
    let checked = 0;
    for (;;) {
      const available = this.#buffer.subarray(this.#start, this.#end);
      if (!checker.done) {
        const error = checker.check(available, checked);
        if (error !== null) return error;
      }
      const end = findHeadEnd(available, checked - 3);
      if (end !== -1) {
        if (end > maxSize) return "too_large";
        // A view, not a copy (a typed array over 64 bytes is a malloc):
        // valid until the next read, so parse it before awaiting one.
        const head = available.subarray(0, end);
        this.#start += end;
        return head;
      }
      checked = available.length;
      if (checked >= maxSize) return "too_large";
      if (!await this.fill()) return "eof";
    }
  }

  /**
   * Reads a line ending in CRLF (returned without it); `null` at EOF or
   * when no CRLF came within `max` bytes.
   */
  async readLine(max: number): Promise<string | null> {
    let scanned = 0;
    for (;;) {
      const buffer = this.#buffer;
      const start = this.#start;
      const last = Math.min(this.#end - 1, start + max + 1);
      for (let i = start + scanned; i < last; i++) {
        if (buffer[i] === 13 && buffer[i + 1] === 10) {
          this.#start = i + 2;
          return latin1(buffer.subarray(start, i));
        }
      }
      if (this.#end - start >= max + 2) return null;
      scanned = Math.max(0, this.#end - start - 1);
      if (!await this.fill()) return null;
    }
  }

  /** A copy of up to `max` buffered bytes (reading if none are); `null` at EOF. */
  async readSome(max: number): Promise<Uint8Array | null> {
    if (this.#start === this.#end && !await this.fill()) return null;
    const n = Math.min(max, this.#end - this.#start);
    const bytes = this.#buffer.slice(this.#start, this.#start + n);
    this.#start += n;
    return bytes;
  }

  /** Drops up to `max` buffered bytes (reading if none are); how many, or `null` at EOF. */
  async skip(max: number): Promise<number | null> {
    if (this.#start === this.#end && !await this.fill()) return null;
    const n = Math.min(max, this.#end - this.#start);
    this.#start += n;
    return n;
  }

  /**
   * Hands the buffer on (to a socket, after an upgrade): the unread bytes
   * and the buffer they are a view of. Waits for a read in flight first.
   */
  async release(): Promise<{ rest: Uint8Array; buffer: Uint8Array }> {
    if (this.#filling !== null) await this.#filling;
    return {
      rest: this.#buffer.subarray(this.#start, this.#end),
      buffer: this.#buffer,
    };
  }
}
