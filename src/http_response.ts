/**
 * Writing a `Response` as HTTP/1.1, its body streamed as the app produces
 * it: with `Content-Length` when the whole body is at hand (or the app set
 * one), chunked otherwise (RFC 9112 7.1), close-delimited for an HTTP/1.0
 * client. Each chunk is written before the next is pulled, so a slow
 * client holds the stream back and memory stays bounded.
 *
 * @module
 */

import { statusText } from "./http.ts";

/**
 * Where response bytes go: rejects when the connection fails. The bytes
 * may be reused once it settled: copy them to keep them.
 */
export type WriteBytes = (bytes: Uint8Array) => Promise<void>;

/** How a response is framed for the connection it goes on. */
export interface ResponseFraming {
  /** The request method: a response to HEAD has no body. */
  method: string;
  /** `Connection: keep-alive` (the connection stays open) or `close`. */
  keepAlive: boolean;
  /** The client speaks HTTP/1.0: no chunked coding, keep-alive said aloud. */
  http10: boolean;
}

/**
 * How a response went out: `"complete"` (the connection may carry another
 * request), `"incomplete"` (its end is the connection's end: close-delimited,
 * or cut short).
 */
export type WriteResult = "complete" | "incomplete";

/**
 * Thrown by {@linkcode writeResponse} when a response body's stream fails.
 *
 * @example
 * ```ts
 * import { BodyFailed } from "./http_response.ts";
 * import assert from "node:assert/strict";
 *
 * const failed = new BodyFailed(new Error("disk gone"), false);
 * assert.equal((failed.cause as Error).message, "disk gone");
 * assert.equal(failed.written, false);
 * ```
 */
export class BodyFailed extends Error {
  /** Whether the head (and maybe some of the body) went out already. */
  readonly written: boolean;

  /**
   * @param cause what the body's stream failed with
   * @param written whether the head went out already
   */
  constructor(cause: unknown, written: boolean) {
    super("Response body failed", { cause });
    this.written = written;
  }
}

/** Header fields the connection handling owns; a `Response` cannot set them. */
const HOP_BY_HOP = new Set([
  "connection",
  "content-length",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
]);

type Read = ReadableStreamReadResult<Uint8Array>;

/** A read from the body's stream, and how it went once settled. */
interface TrackedRead {
  promise: Promise<Read>;
  /** 0: not settled; 1: resolved with `result`; 2: rejected with `error`. */
  state: 0 | 1 | 2;
  result: Read | null;
  error: unknown;
}

function track(promise: Promise<Read>): TrackedRead {
  const read: TrackedRead = { promise, state: 0, result: null, error: null };
  promise.then((result) => {
    read.state = 1;
    read.result = result;
  }, (error) => {
    read.state = 2;
    read.error = error;
  });
  return read;
}

let dateSecond = 0;
let dateValue = "";

/** RFC 9110 6.6.1: an origin server with a clock sends `Date`. */
function httpDate(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateValue = new Date(now).toUTCString();
  }
  return dateValue;
}

const encoder = new TextEncoder();
// Non-ASCII: header values are byte strings (ISO-8859-1), not UTF-8.
const NON_ASCII = /[\u0080-\uffff]/;

/** Write buffers of this size are reused; see {@linkcode writeWhole}. */
const SCRATCH_SIZE = 4096;
const scratch: Uint8Array[] = [];

/**
 * Writes a head and a whole body (or none) in one write. A response that
 * fits {@linkcode SCRATCH_SIZE} bytes goes out from a reused buffer: a typed
 * array over 64 bytes is a `malloc` (and a `free` at GC), and that was a
 * measurable part of a small response. The buffer is taken for the one
 * write and given back once it settled, when nothing refers to it.
 */
async function writeWhole(
  write: WriteBytes,
  head: string,
  body: Uint8Array | null,
): Promise<void> {
  const size = head.length + (body === null ? 0 : body.length);
  const buffer = size > SCRATCH_SIZE
    ? null
    : scratch.pop() ?? new Uint8Array(SCRATCH_SIZE);
  // ASCII, the usual case, encodes to as many bytes as it has characters;
  // anything else is written as ISO-8859-1 (header values are bytes).
  if (buffer === null || !isAscii(encoder.encodeInto(head, buffer), head)) {
    if (buffer !== null) scratch.push(buffer);
    const out = latin1Bytes(head, size - head.length);
    if (body !== null) out.set(body, head.length);
    return await write(out);
  }
  try {
    if (body !== null) buffer.set(body, head.length);
    await write(buffer.subarray(0, size));
  } finally {
    if (scratch.length < 64) scratch.push(buffer);
  }
}

/** Whether an `encodeInto` of `text` shows it was ASCII (one byte each). */
function isAscii(result: TextEncoderEncodeIntoResult, text: string): boolean {
  return result.read === text.length && result.written === text.length;
}

/** A head's text as bytes, with `extra` bytes of room after it. */
function latin1Bytes(text: string, extra: number): Uint8Array {
  const ascii = !NON_ASCII.test(text);
  if (ascii && extra === 0) return encoder.encode(text);
  const bytes = new Uint8Array(text.length + extra);
  if (ascii) {
    encoder.encodeInto(text, bytes);
    return bytes;
  }
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

function headText(
  response: Response,
  framing: ResponseFraming,
  length: string | null,
): string {
  const status = response.status;
  let head = `HTTP/1.1 ${status} ${
    response.statusText || statusText(status)
  }\r\n`;
  let dated = false;
  // forEach, not for-of: the same fields (set-cookie one by one), several
  // times faster in Deno 2.9 than its iterator.
  response.headers.forEach((value, name) => {
    if (HOP_BY_HOP.has(name)) return;
    if (name === "date") dated = true;
    head += `${name}: ${value}\r\n`;
  });
  if (!dated) head += `date: ${httpDate()}\r\n`;
  if (length !== null) head += length;
  if (!framing.keepAlive) head += "connection: close\r\n";
  else if (framing.http10) head += "connection: keep-alive\r\n";
  return head + "\r\n";
}

/** `bytes` with a chunk's size line before and CRLF after. */
function chunk(bytes: Uint8Array): Uint8Array {
  const size = bytes.length.toString(16);
  const out = new Uint8Array(size.length + 4 + bytes.length);
  for (let i = 0; i < size.length; i++) out[i] = size.charCodeAt(i);
  out[size.length] = 13;
  out[size.length + 1] = 10;
  out.set(bytes, size.length + 2);
  out[out.length - 2] = 13;
  out[out.length - 1] = 10;
  return out;
}

const LAST_CHUNK = new Uint8Array([0x30, 13, 10, 13, 10]);

/**
 * Writes `response`: the head, then the body as it comes.
 *
 * @example A whole body gets a Content-Length
 * ```ts
 * import { writeResponse } from "./http_response.ts";
 * import assert from "node:assert/strict";
 *
 * const out: Uint8Array[] = [];
 * const result = await writeResponse(
 *   new Response("hi", { headers: { "date": "x" } }),
 *   async (bytes) => void out.push(bytes.slice()),
 *   { method: "GET", keepAlive: true, http10: false },
 * );
 * assert.equal(result, "complete");
 * assert.equal(
 *   new TextDecoder().decode(out[0]),
 *   "HTTP/1.1 200 OK\r\ncontent-type: text/plain;charset=UTF-8\r\ndate: x\r\n" +
 *     "content-length: 2\r\n\r\nhi",
 * );
 * ```
 *
 * @example A stream goes out chunked, a chunk per write
 * ```ts
 * import { writeResponse } from "./http_response.ts";
 * import assert from "node:assert/strict";
 *
 * const out: string[] = [];
 * const body = ReadableStream.from(["a", "bc"]).pipeThrough(new TextEncoderStream());
 * await writeResponse(
 *   new Response(body),
 *   async (bytes) => void out.push(new TextDecoder().decode(bytes)),
 *   { method: "GET", keepAlive: true, http10: false },
 * );
 * assert.match(out[0], /transfer-encoding: chunked\r\n\r\n/);
 * assert.deepEqual(out.slice(-2), ["2\r\nbc\r\n", "0\r\n\r\n"]);
 * ```
 *
 * @param response what the app answered
 * @param write where the bytes go
 * @param framing the request's method and the connection's terms
 * @returns whether the connection may carry another request
 * @throws {BodyFailed} the body's stream failed (if before anything was
 *   written, the caller can still answer 500)
 * @throws what `write` throws (the connection failed)
 */
export async function writeResponse(
  response: Response,
  write: WriteBytes,
  framing: ResponseFraming,
): Promise<WriteResult> {
  const status = response.status;
  const bodyless = status === 204 || status === 304 ||
    (status >= 100 && status < 200);
  const body = response.body;
  if (bodyless || body === null) {
    if (body !== null) body.cancel().catch(noop);
    const length = bodyless ? null : "content-length: 0\r\n";
    await writeWhole(write, headText(response, framing, length), null);
    return "complete";
  }
  const declared = declaredLength(response.headers.get("content-length"));
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  const inFlight: Promise<Read>[] = [];
  let ended = false;
  // Two reads at once: a body made whole (a string, bytes, JSON) gives its
  // chunk and its end within a few microtask turns, and gets a
  // Content-Length; anything else is streamed.
  const reads = [track(reader.read()), track(reader.read())];
  // Two microtask turns: long enough for the reads of a body whose bytes
  // are queued already to settle (in Deno 2.9), and no longer, so a stream
  // that waits for its producer is not waited on. If a Deno took longer,
  // such bodies would go out chunked: slower, still right (a test checks).
  await null;
  await null;
  for (const read of reads) {
    if (ended) continue;
    if (read.state === 0) inFlight.push(read.promise);
    else if (read.state === 2) throw new BodyFailed(read.error, false);
    else if (inFlight.length > 0) inFlight.push(read.promise);
    else if (read.result!.done) ended = true;
    else chunks.push(read.result!.value);
  }
  if (ended && declared === null && chunks.length <= 1) {
    const whole = chunks[0] ?? new Uint8Array(0);
    const length = `content-length: ${whole.length}\r\n`;
    const head = headText(response, framing, length);
    await writeWhole(write, head, framing.method === "HEAD" ? null : whole);
    return "complete";
  }
  return await stream(response, reader, write, framing, {
    declared,
    chunks,
    inFlight,
    ended,
  });
}

/** The app's own `Content-Length`, when it is one number. */
function declaredLength(value: string | null): number | null {
  if (value === null || !/^\d{1,15}$/.test(value)) return null;
  return Number(value);
}

/** A body that did not end at once: where its reading stands. */
interface StreamState {
  declared: number | null;
  /** Chunks read and not yet written. */
  chunks: Uint8Array[];
  /** Reads that were started and have not been taken, in order. */
  inFlight: Promise<Read>[];
  ended: boolean;
}

async function stream(
  response: Response,
  reader: ReadableStreamDefaultReader<Uint8Array>,
  write: WriteBytes,
  framing: ResponseFraming,
  state: StreamState,
): Promise<WriteResult> {
  const declared = state.declared;
  const mode = declared !== null
    ? "length"
    : framing.http10
    ? "close"
    : "chunked";
  const length = mode === "length"
    ? `content-length: ${declared}\r\n`
    : mode === "chunked"
    ? "transfer-encoding: chunked\r\n"
    : null;
  const keepAlive = framing.keepAlive && mode !== "close";
  const head = latin1Bytes(
    headText(response, { ...framing, keepAlive }, length),
    0,
  );
  if (framing.method === "HEAD") {
    for (const read of state.inFlight) read.catch(noop);
    reader.cancel().catch(noop);
    await write(head);
    return keepAlive ? "complete" : "incomplete";
  }
  let sent = 0;
  // Writes a piece of the body; false when the app's length is reached.
  const send = async (bytes: Uint8Array, first: Uint8Array | null) => {
    let more = true;
    if (mode === "length" && sent + bytes.length >= declared!) {
      // More than the app said: what was said is all that goes.
      bytes = bytes.subarray(0, declared! - sent);
      more = false;
    }
    sent += bytes.length;
    const framed = mode === "chunked" ? chunk(bytes) : bytes;
    await write(first === null ? framed : join(first, framed));
    return more;
  };
  // The head goes out with the first chunk when that is at hand.
  let head1: Uint8Array | null = head;
  let more = true;
  try {
    for (const bytes of state.chunks) {
      if (!more) break;
      more = await send(bytes, head1);
      head1 = null;
    }
    if (head1 !== null) await write(head1);
    let pending = 0;
    while (more && !state.ended) {
      let result: Read;
      try {
        result = await (pending < state.inFlight.length
          ? state.inFlight[pending++]
          : reader.read());
      } catch (error) {
        throw new BodyFailed(error, true);
      }
      if (result.done) break;
      if (result.value.length === 0) continue;
      more = await send(result.value, null);
    }
  } catch (error) {
    reader.cancel(error).catch(noop);
    throw error;
  }
  if (!more) reader.cancel().catch(noop);
  if (mode === "chunked") {
    await write(LAST_CHUNK);
    return keepAlive ? "complete" : "incomplete";
  }
  if (mode === "length" && sent === declared) {
    return keepAlive ? "complete" : "incomplete";
  }
  return "incomplete";
}

function join(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function noop(): void {}
