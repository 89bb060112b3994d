/**
 * A plain HTTP request's body as a stream, read off the connection as the
 * app pulls it: `Content-Length` or chunked (RFC 9112 6 and 7.1), with
 * `maxRequestBodySize` checked as bytes arrive, and `100 Continue` sent
 * when the app first reads a body the client waits to send.
 *
 * @module
 */

import type { BodyError } from "./http_request.ts";
import type { ConnReader } from "./http_reader.ts";

/** Longest chunk-size line (with extensions) of a chunked body. */
const MAX_CHUNK_LINE = 4096;
/** Most bytes of trailer fields after a chunked body. */
const MAX_TRAILERS = 16 * 1024;
/** Most bytes handed to the app per read. */
const PIECE = 64 * 1024;

const TRUNCATED: BodyError = {
  status: 400,
  message: "Invalid request: the connection ended inside the body",
};

// Where a chunked body is (RFC 9112 7.1): a size line, data, the CRLF
// after the data, trailer lines; or done, or failed.
const SIZE = 0;
const DATA = 1;
const DATA_END = 2;
const TRAILERS = 3;
const DONE = 4;
const FAILED = 5;

/** How a {@linkcode RequestBody} is framed and bounded. */
export interface RequestBodyOptions {
  /** A byte count, or `"chunked"`. */
  length: number | "chunked";
  /** Most body bytes: more is a 413. */
  maxSize: number;
  /** Writes `100 Continue`, when the client waits for it. */
  sendContinue: (() => Promise<void>) | null;
  /** Starts the deadline one read of the body must meet; returns its cancel. */
  deadline: () => () => void;
  /** Called when the body was read to its end. */
  onEnd: () => void;
}

/**
 * Reads one request body off a {@linkcode ConnReader}.
 *
 * @example A chunked body, as a stream
 * ```ts
 * import { RequestBody } from "./http_body.ts";
 * import { ConnReader } from "./http_reader.ts";
 * import assert from "node:assert/strict";
 *
 * const bytes = new TextEncoder().encode("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
 * const conn = { read: () => Promise.resolve(null) } as unknown as Deno.Conn;
 * const body = new RequestBody(new ConnReader(conn, bytes, bytes, 4096), {
 *   length: "chunked",
 *   maxSize: 100,
 *   sendContinue: null,
 *   deadline: () => () => {},
 *   onEnd: () => {},
 * });
 * assert.equal(await new Response(body.stream()).text(), "abcde");
 * assert.ok(body.done);
 * ```
 */
export class RequestBody {
  #reader: ConnReader;
  #chunked: boolean;
  #maxSize: number;
  // Bytes left of the body (Content-Length) or of the current chunk.
  #remaining: number;
  #total = 0;
  #state: number;
  #continue: (() => Promise<void>) | null;
  #deadline: () => () => void;
  #onEnd: () => void;
  #busy: Promise<unknown> | null = null;
  /** Why the body could not be read: the answer the client gets. */
  error: BodyError | null = null;

  /**
   * @param reader where the body comes from
   * @param options how the body is framed and bounded
   */
  constructor(reader: ConnReader, options: RequestBodyOptions) {
    const length = options.length;
    this.#reader = reader;
    this.#chunked = length === "chunked";
    this.#remaining = length === "chunked" ? 0 : length;
    this.#state = length === "chunked" ? SIZE : DATA;
    this.#maxSize = options.maxSize;
    this.#continue = options.sendContinue;
    this.#deadline = options.deadline;
    this.#onEnd = options.onEnd;
  }

  /** Whether the body was read to its end. */
  get done(): boolean {
    return this.#state === DONE;
  }

  /** Whether the client still waits for a `100 Continue` it never got. */
  get awaitingContinue(): boolean {
    return this.#continue !== null;
  }

  /** The body as a stream, for `Request`. */
  stream(): ReadableStream<Uint8Array> {
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        const piece = await this.#guard(this.next());
        if (piece === null) controller.close();
        else if ("status" in piece) {
          controller.error(new TypeError(piece.message));
        } else controller.enqueue(piece);
      },
      // Nothing is read (and no 100 Continue sent) before the app asks.
    }, { highWaterMark: 0 });
  }

  /** Reads the rest and drops it, up to `limit` bytes: whether it ended. */
  async drain(limit: number): Promise<boolean> {
    if (this.#continue !== null) return false;
    if (this.#busy !== null) await this.#busy.catch(() => {});
    let dropped = 0;
    while (this.#state !== DONE && this.#state !== FAILED) {
      const piece = await this.#guard(this.next());
      if (piece === null) return true;
      if ("status" in piece) return false;
      dropped += piece.length;
      if (dropped > limit) return false;
    }
    return this.#state === DONE;
  }

  async #guard<V>(promise: Promise<V>): Promise<V> {
    this.#busy = promise;
    try {
      return await promise;
    } finally {
      this.#busy = null;
    }
  }

  /** The next piece of the body; `null` at its end; the error to answer. */
  async next(): Promise<Uint8Array | null | BodyError> {
    const cancel = this.#deadline();
    try {
      return await this.#next();
    } finally {
      cancel();
    }
  }

  async #next(): Promise<Uint8Array | null | BodyError> {
    if (this.#continue !== null) {
      const send = this.#continue;
      this.#continue = null;
      await send();
    }
    for (;;) {
      switch (this.#state) {
        case DONE:
          return null;
        case FAILED:
          return this.error!;
        case DATA: {
          if (this.#remaining === 0) {
            if (this.#chunked) this.#state = DATA_END;
            else this.#end();
            continue;
          }
          const piece = await this.#reader.readSome(
            Math.min(this.#remaining, PIECE),
          );
          if (piece === null) return this.#fail(TRUNCATED);
          this.#remaining -= piece.length;
          return piece;
        }
        case SIZE: {
          const line = await this.#reader.readLine(MAX_CHUNK_LINE);
          if (line === null) return this.#fail(TRUNCATED);
          // RFC 9112 7.1: chunk-size [ chunk-ext ] CRLF
          const hex = line.split(";", 1)[0].trim();
          if (!/^[0-9a-fA-F]{1,12}$/.test(hex)) {
            return this.#fail({
              status: 400,
              message: `Invalid chunk size: ${
                JSON.stringify(line.slice(0, 32))
              }`,
            });
          }
          const size = parseInt(hex, 16);
          if (size === 0) {
            this.#state = TRAILERS;
            this.#remaining = 0;
            continue;
          }
          if (this.#total + size > this.#maxSize) {
            return this.#fail({
              status: 413,
              message:
                `Request body too large: limit is ${this.#maxSize} bytes`,
            });
          }
          this.#total += size;
          this.#remaining = size;
          this.#state = DATA;
          continue;
        }
        case DATA_END: {
          const line = await this.#reader.readLine(0);
          if (line !== "") {
            return this.#fail(
              line === null && this.#reader.ended &&
                this.#reader.buffered === 0
                ? TRUNCATED
                : {
                  status: 400,
                  message:
                    "Invalid chunked body: chunk data not followed by CRLF",
                },
            );
          }
          this.#state = SIZE;
          continue;
        }
        case TRAILERS: {
          // RFC 9112 7.1.2: trailer fields, then an empty line. Dropped.
          const line = await this.#reader.readLine(MAX_TRAILERS);
          if (line === null) return this.#fail(TRUNCATED);
          if (line === "") {
            this.#end();
            return null;
          }
          this.#remaining += line.length + 2;
          if (this.#remaining > MAX_TRAILERS) {
            return this.#fail({
              status: 400,
              message:
                `Invalid chunked body: trailers over ${MAX_TRAILERS} bytes`,
            });
          }
          continue;
        }
      }
    }
  }

  #end(): void {
    this.#state = DONE;
    this.#onEnd();
  }

  #fail(error: BodyError): BodyError {
    this.#state = FAILED;
    this.error = error;
    return error;
  }
}
