/**
 * Plain HTTP/1.1 on the WebSocket port: reading a request body with a size
 * limit, building a `Request`, and writing a `Response` back. One request
 * per connection: every response says `Connection: close`.
 *
 * @module
 */

import { headerList, latin1, type RequestHead, statusText } from "./http.ts";

const encoder = new TextEncoder();

/** Why a request body was not read: the status to answer with. */
export interface BodyError {
  status: 400 | 413 | 501;
  message: string;
}

/** Longest chunk-size line (with extensions) of a chunked body. */
const MAX_CHUNK_LINE = 4096;
/** Most bytes of trailer fields after a chunked body. */
const MAX_TRAILERS = 16 * 1024;

/** Reads from a conn, starting with bytes already read past the head. */
class BufferedReader {
  #conn: Deno.Conn;
  #buffer: Uint8Array;
  #start = 0;
  #end: number;

  constructor(conn: Deno.Conn, initial: Uint8Array) {
    this.#conn = conn;
    this.#buffer = new Uint8Array(Math.max(4096, initial.length));
    this.#buffer.set(initial);
    this.#end = initial.length;
  }

  /** Reads more bytes from the conn; false at EOF. */
  async #fill(): Promise<boolean> {
    if (this.#start > 0) {
      this.#buffer.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    if (this.#end === this.#buffer.length) {
      const bigger = new Uint8Array(this.#buffer.length * 2);
      bigger.set(this.#buffer);
      this.#buffer = bigger;
    }
    const n = await this.#conn.read(this.#buffer.subarray(this.#end));
    if (n === null) return false;
    this.#end += n;
    return true;
  }

  /**
   * Reads a line ending in CRLF (returned without it); `null` at EOF or
   * when no CRLF came within `max` bytes.
   */
  async readLine(max: number): Promise<string | null> {
    // Bytes after #start already scanned (#fill may move #start to 0).
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
      if (!await this.#fill()) return null;
    }
  }

  /** Fills `target` exactly; false at EOF. */
  async readExact(target: Uint8Array): Promise<boolean> {
    let offset = 0;
    while (offset < target.length) {
      if (this.#start === this.#end && !await this.#fill()) return false;
      const n = Math.min(this.#end - this.#start, target.length - offset);
      target.set(this.#buffer.subarray(this.#start, this.#start + n), offset);
      this.#start += n;
      offset += n;
    }
    return true;
  }
}

/**
 * How a request frames its body (RFC 9112 6): `null` for none, a byte
 * count for `Content-Length`, `"chunked"`, or the error to answer with.
 */
export function bodyLength(
  headers: Headers,
  maxSize: number,
): number | "chunked" | null | BodyError {
  const transferEncoding = headers.get("transfer-encoding");
  const contentLength = headers.get("content-length");
  if (transferEncoding !== null) {
    // RFC 9112 6.3: a request with both "ought to be handled as an error";
    // answering it closes the door on request smuggling.
    if (contentLength !== null) {
      return {
        status: 400,
        message:
          "Invalid request: both Transfer-Encoding and Content-Length are set",
      };
    }
    const codings = headerList(transferEncoding).map((c) => c.toLowerCase());
    if (codings.length !== 1 || codings[0] !== "chunked") {
      // RFC 9112 6.1: an unknown transfer coding gets 501.
      return {
        status: 501,
        message: `Unsupported transfer coding: ${transferEncoding}`,
      };
    }
    return "chunked";
  }
  if (contentLength === null) return null;
  const values = headerList(contentLength);
  if (values.length === 0 || !values.every((v) => /^\d{1,15}$/.test(v))) {
    return {
      status: 400,
      message: `Invalid Content-Length: ${JSON.stringify(contentLength)}`,
    };
  }
  const length = Number(values[0]);
  // RFC 9112 6.3: a list of identical values is the value.
  if (!values.every((v) => Number(v) === length)) {
    return {
      status: 400,
      message: `Invalid Content-Length: ${JSON.stringify(contentLength)}`,
    };
  }
  if (length > maxSize) {
    return {
      status: 413,
      message:
        `Request body too large: limit is ${maxSize} bytes, Content-Length is ${length}`,
    };
  }
  return length === 0 ? null : length;
}

/**
 * Reads a request body framed as {@linkcode bodyLength} said, starting with
 * `rest` (the bytes read past the head). A chunked body that grows past
 * `maxSize` stops with 413. Throws what `conn.read` throws.
 */
export async function readBody(
  conn: Deno.Conn,
  rest: Uint8Array,
  length: number | "chunked",
  maxSize: number,
): Promise<Uint8Array | BodyError> {
  const reader = new BufferedReader(conn, rest);
  const truncated: BodyError = {
    status: 400,
    message: "Invalid request: the connection ended inside the body",
  };
  if (length !== "chunked") {
    const body = new Uint8Array(length);
    return await reader.readExact(body) ? body : truncated;
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const line = await reader.readLine(MAX_CHUNK_LINE);
    if (line === null) return truncated;
    // RFC 9112 7.1: chunk-size [ chunk-ext ] CRLF
    const hex = line.split(";", 1)[0].trim();
    if (!/^[0-9a-fA-F]{1,12}$/.test(hex)) {
      return {
        status: 400,
        message: `Invalid chunk size: ${JSON.stringify(line.slice(0, 32))}`,
      };
    }
    const chunkSize = parseInt(hex, 16);
    if (chunkSize === 0) break;
    if (size + chunkSize > maxSize) {
      return {
        status: 413,
        message: `Request body too large: limit is ${maxSize} bytes`,
      };
    }
    const chunk = new Uint8Array(chunkSize);
    if (!await reader.readExact(chunk)) return truncated;
    if (await reader.readLine(0) !== "") {
      return {
        status: 400,
        message: "Invalid chunked body: chunk data not followed by CRLF",
      };
    }
    chunks.push(chunk);
    size += chunkSize;
  }
  // RFC 9112 7.1.2: trailer fields, then an empty line. They are dropped.
  let trailers = 0;
  for (;;) {
    const line = await reader.readLine(MAX_TRAILERS);
    if (line === null) return truncated;
    if (line === "") break;
    trailers += line.length + 2;
    if (trailers > MAX_TRAILERS) {
      return {
        status: 400,
        message: `Invalid chunked body: trailers over ${MAX_TRAILERS} bytes`,
      };
    }
  }
  const body = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.length;
  }
  return body;
}

/**
 * The full URL of a request: `target` (origin-form or absolute-form)
 * resolved against the scheme and `Host`. `null` when it does not parse.
 */
export function requestUrl(
  head: RequestHead,
  scheme: string,
  fallbackHost: string,
): string | null {
  const host = head.headers.get("host") ?? fallbackHost;
  try {
    return new URL(head.target, `${scheme}://${host}`).href;
  } catch {
    return null;
  }
}

/**
 * A `Request` for a parsed head and body. Bodies of GET and HEAD requests
 * are dropped (a `Request` cannot carry them). Throws a `TypeError` for
 * what `Request` refuses (e.g. the methods CONNECT and TRACE).
 */
export function buildRequest(
  head: RequestHead,
  url: string,
  body: Uint8Array | null,
  signal?: AbortSignal,
): Request {
  const method = head.method;
  const bodyless = method === "GET" || method === "HEAD";
  return new Request(url, {
    method,
    headers: head.headers,
    body: bodyless || body === null ? null : body as Uint8Array<ArrayBuffer>,
    signal,
  });
}

/** Serializes a status line and header fields (names and values as given). */
export function encodeHead(
  status: number,
  reason: string,
  fields: Iterable<[string, string]>,
): string {
  let head = `HTTP/1.1 ${status} ${reason}\r\n`;
  for (const [name, value] of fields) head += `${name}: ${value}\r\n`;
  return head + "\r\n";
}

/** Header fields the connection handling owns; a `Response` cannot set them. */
const HOP_BY_HOP = new Set([
  "connection",
  "content-length",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
]);

/**
 * Serializes a `Response` as HTTP/1.1, with `Content-Length` and
 * `Connection: close`. The body is read whole first (so a body that fails
 * rejects before anything is written). A response to HEAD, and a 204 or
 * 304, has no body.
 */
export async function encodeHttpResponse(
  response: Response,
  method: string,
): Promise<Uint8Array> {
  const status = response.status;
  const noBody = status === 204 || status === 304;
  const body = noBody || response.body === null
    ? new Uint8Array(0)
    : new Uint8Array(await response.arrayBuffer());
  const fields: [string, string][] = [];
  for (const [name, value] of response.headers) {
    if (!HOP_BY_HOP.has(name)) fields.push([name, value]);
  }
  if (!noBody) fields.push(["content-length", String(body.length)]);
  fields.push(["connection", "close"]);
  const head = encoder.encode(
    encodeHead(status, response.statusText || statusText(status), fields),
  );
  if (method === "HEAD" || body.length === 0) return head;
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}
