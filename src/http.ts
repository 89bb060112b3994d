/**
 * HTTP/1.1 heads (RFC 9112), hand-written: parse a request or response
 * head, check a request line as its bytes arrive, write a short response.
 * Nothing WebSocket-specific: the upgrade itself is in `handshake.ts`.
 *
 * Pure: no I/O, no promises.
 *
 * @module
 */

/**
 * Bytes to a string of the same code units (ISO-8859-1). Not TextDecoder's
 * "latin1", which is windows-1252 and maps 0x80-0x9F above U+00FF, so UTF-8
 * in a header value would be rejected. Header values stay byte strings, as
 * `Headers` and Deno.serve keep them.
 */
export function latin1(bytes: Uint8Array): string {
  // ASCII, the usual case, is the same in UTF-8: decoded natively.
  let ascii = true;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] > 0x7f) {
      ascii = false;
      break;
    }
  }
  if (ascii) return asciiDecoder.decode(bytes);
  let text = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    text += String.fromCharCode.apply(
      null,
      bytes.subarray(i, i + 8192) as unknown as number[],
    );
  }
  return text;
}
const asciiDecoder = new TextDecoder();
const encoder = new TextEncoder();

/** A parsed HTTP request head. */
export interface RequestHead {
  method: string;
  target: string;
  version: string;
  headers: Headers;
  /**
   * The header fields as sent, in order, names in lower case: a `Request`
   * is built faster from these than from `headers`, whose iteration sorts
   * and combines.
   */
  fields?: [string, string][];
  /**
   * The whole head as text (valid: it parsed), from which `headers` can be
   * built again later: one string is what a socket keeps of its request.
   */
  text?: string;
}

/** A parsed HTTP response head. */
export interface ResponseHead {
  version: string;
  status: number;
  statusText: string;
  headers: Headers;
}

/** Why a head could not be parsed: the HTTP status to answer with. */
export interface HeadError {
  status: 400 | 431;
  message: string;
}

/**
 * Finds the end of an HTTP head (`\r\n\r\n`) in `bytes` up to `end`,
 * scanning from `from` (pass how far an earlier scan got, minus 3).
 *
 * @returns the index just past the blank line, or -1
 */
export function findHeadEnd(
  bytes: Uint8Array,
  from = 0,
  end = bytes.length,
): number {
  for (let i = Math.max(0, from); i + 3 < end; i++) {
    if (
      bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 &&
      bytes[i + 3] === 10
    ) return i + 4;
  }
  return -1;
}

// RFC 9110 5.6.2: token characters.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Whether `value` is an HTTP token (RFC 9110 5.6.2). */
export function isToken(value: string): boolean {
  return TOKEN.test(value);
}

/** RFC 9110 5.6.2: `tchar`, as a byte table. */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) TCHAR[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TCHAR[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TCHAR[c] = 1;

const SP = 0x20;
const CR = 0x0d;
const LF = 0x0a;
/** RFC 9112 2.3: `HTTP-version`, up to its minor digit (which is any DIGIT). */
const HTTP_1 = [0x48, 0x54, 0x54, 0x50, 0x2f, 0x31, 0x2e];

// Where a RequestLineChecker is: the parts of RFC 9112 3's
// `method SP request-target SP HTTP-version CRLF`.
const METHOD = 0;
const TARGET = 1;
const VERSION = 2;
const LINE_FEED = 3;
const LINE_DONE = 4;

/**
 * Checks the request line (RFC 9112 3) as its bytes arrive, so a
 * connection that cannot be HTTP/1.x (random bytes, a TLS ClientHello sent
 * to a plain port, a NUL, a method that is not a token, another HTTP
 * version, a line that never ends) is refused at the first byte that
 * proves it, not when its head ends or its handshake times out.
 *
 * Stricter than a full parse needs to be: the request target must be
 * visible ASCII (RFC 3986 leaves no room for anything else, and RFC 9112
 * 3.2 has no bytes over 0x7F in a target), and no empty line may come
 * before the request line (RFC 9112 2.2 lets a server accept one; this
 * one does not).
 */
export class RequestLineChecker {
  #limit: number;
  #state = METHOD;
  // Bytes of the line seen, and of the part in progress.
  #length = 0;
  #part = 0;

  /** @param limit most bytes of request line, CRLF included */
  constructor(limit: number) {
    this.#limit = limit;
  }

  /** Whether the whole request line came, and was valid. */
  get done(): boolean {
    return this.#state === LINE_DONE;
  }

  /**
   * Checks the next bytes of the request (`bytes` from `from` to `end`). Bytes
   * after the request line are not looked at.
   *
   * @returns `null` while the bytes can still start a valid request, or
   *   the 400 to answer with
   */
  check(
    bytes: Uint8Array,
    from = 0,
    end = bytes.length,
  ): HeadError | null {
    for (let i = from; i < end && this.#state !== LINE_DONE; i++) {
      if (++this.#length > this.#limit) {
        return {
          status: 400,
          message:
            `Malformed request line: no CRLF within the first ${this.#limit} bytes`,
        };
      }
      const byte = bytes[i];
      const part = this.#part++;
      switch (this.#state) {
        case METHOD:
          // RFC 9112 3.1: method = token
          if (TCHAR[byte] === 1) continue;
          if (byte === SP && part > 0) break;
          return this.#error(
            byte,
            part > 0 ? "the method is not a token" : "no method",
          );
        case TARGET:
          // RFC 9112 3.2: the target ends at the next SP; it is visible ASCII.
          if (byte > SP && byte < 0x7f) continue;
          if (byte === SP && part > 0) break;
          return this.#error(
            byte,
            part > 0 ? "the request target is not visible ASCII" : "no target",
          );
        case VERSION:
          // RFC 9112 2.3: HTTP-version = "HTTP" "/" DIGIT "." DIGIT, and
          // only HTTP/1.x is spoken on this port.
          if (part < HTTP_1.length) {
            if (byte === HTTP_1[part]) continue;
          } else if (part === HTTP_1.length) {
            if (byte >= 0x30 && byte <= 0x39) continue;
          } else if (byte === CR) break;
          return this.#error(byte, "the version is not HTTP/1.x");
        case LINE_FEED:
          if (byte === LF) break;
          return this.#error(byte, "CR not followed by LF");
      }
      this.#state++;
      this.#part = 0;
    }
    return null;
  }

  #error(byte: number, what: string): HeadError {
    return {
      status: 400,
      message: `Malformed request line: ${what}, received byte 0x${
        byte.toString(16).padStart(2, "0")
      } at offset ${this.#length - 1}`,
    };
  }
}
// RFC 9110 5.5: field values are visible characters, spaces and tabs.
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

function parseHeaderLines(
  lines: string[],
  into: Headers | [string, string][],
): string | null {
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon <= 0) {
      return `Malformed header line: ${JSON.stringify(line.slice(0, 64))}`;
    }
    const name = line.slice(0, colon);
    // RFC 9112 5.1: no whitespace between the field name and the colon, and
    // obsolete line folding is rejected.
    if (!TOKEN.test(name)) {
      return `Invalid header name: ${JSON.stringify(name.slice(0, 64))}`;
    }
    const value = line.slice(colon + 1).trim();
    if (!FIELD_VALUE.test(value)) return `Invalid value for header ${name}`;
    if (Array.isArray(into)) into.push([name.toLowerCase(), value]);
    else {
      try {
        into.append(name, value);
      } catch {
        return `Invalid value for header ${name}`;
      }
    }
  }
  return null;
}

/** Parses an HTTP/1.1 request head (the bytes up to and with `\r\n\r\n`). */
export function parseRequestHead(head: Uint8Array): RequestHead | HeadError {
  const text = latin1(head);
  return parseWellFormed(head, text) ?? parseRequestLines(text);
}

const COLON = 0x3a;
const HTAB = 0x09;
const NBSP = 0xa0;

/**
 * {@linkcode parseRequestHead} in one pass over the bytes, for a head with
 * nothing unusual in it: every string is cut from `text` (the head as
 * Latin-1). `null` for anything else, which {@linkcode parseRequestLines} then
 * parses, or words the 400 for. What this accepts, that accepts too, with
 * the same result: a short connection spent more on the splits and
 * regular expressions there than on the rest of its upgrade.
 */
function parseWellFormed(head: Uint8Array, text: string): ParsedHead | null {
  // The request line: token SP visible-ASCII SP "HTTP/1." DIGIT CRLF.
  let i = 0;
  while (TCHAR[head[i]] === 1) i++;
  if (i === 0 || head[i] !== SP) return null;
  const method = text.slice(0, i);
  const targetStart = ++i;
  while (head[i] > SP && head[i] < 0x7f) i++;
  if (i === targetStart || head[i] !== SP) return null;
  const target = text.slice(targetStart, i);
  const versionStart = ++i;
  for (let k = 0; k < HTTP_1.length; k++, i++) {
    if (head[i] !== HTTP_1[k]) return null;
  }
  if (!(head[i] >= 0x30 && head[i] <= 0x39)) return null;
  const version = text.slice(versionStart, ++i);
  if (head[i] !== CR || head[i + 1] !== LF) return null;
  i += 2;
  // Fields up to the blank line: token ":" value CRLF, the value visible
  // characters, spaces and tabs.
  const end = head.length - 2;
  if (head[end] !== CR || head[end + 1] !== LF) return null;
  const fields: [string, string][] = [];
  while (i < end) {
    const nameStart = i;
    while (TCHAR[head[i]] === 1) i++;
    if (i === nameStart || head[i] !== COLON) return null;
    const nameEnd = i++;
    let valueStart = i;
    for (; i < end && head[i] !== CR; i++) {
      const byte = head[i];
      if (byte < SP ? byte !== HTAB : byte === 0x7f) return null;
    }
    if (i >= end || head[i + 1] !== LF) return null;
    // Trimmed as String.prototype.trim() would: tabs, spaces and U+00A0.
    let valueEnd = i;
    while (valueStart < valueEnd && isBlank(head[valueStart])) valueStart++;
    while (valueEnd > valueStart && isBlank(head[valueEnd - 1])) valueEnd--;
    fields.push([
      text.slice(nameStart, nameEnd).toLowerCase(),
      text.slice(valueStart, valueEnd),
    ]);
    i += 2;
  }
  return new ParsedHead(method, target, version, fields, text);
}

function isBlank(byte: number): boolean {
  return byte === SP || byte === HTAB || byte === NBSP;
}

/**
 * {@linkcode parseRequestHead} of any head, line by line, from its text
 * (the head as Latin-1). Exported for the test that holds the one-pass
 * parse to it.
 */
export function parseRequestLines(text: string): RequestHead | HeadError {
  const lines = text.split("\r\n");
  // The head ends with an empty line; anything else has no place here.
  lines.length -= 2;
  const requestLine = lines.shift() ?? "";
  const parts = requestLine.split(" ");
  if (parts.length !== 3 || !TOKEN.test(parts[0]) || parts[1] === "") {
    return {
      status: 400,
      message: `Malformed request line: ${
        JSON.stringify(requestLine.slice(0, 64))
      }`,
    };
  }
  const [method, target, version] = parts;
  // Only HTTP/1.x is spoken here (see RequestLineChecker).
  if (!/^HTTP\/1\.\d$/.test(version)) {
    return {
      status: 400,
      message: `Malformed request line: version ${
        JSON.stringify(version.slice(0, 16))
      }`,
    };
  }
  const fields: [string, string][] = [];
  const error = parseHeaderLines(lines, fields);
  if (error !== null) return { status: 400, message: error };
  return new ParsedHead(method, target, version, fields, text);
}

/**
 * The `Headers` of a request head's text that {@linkcode parseRequestHead}
 * accepted: parsed again, as a socket's `request.headers` is built only
 * when first read.
 */
export function headersOfText(text: string): Headers {
  const lines = text.split("\r\n");
  lines.length -= 2;
  lines.shift();
  const headers = new Headers();
  parseHeaderLines(lines, headers);
  return headers;
}

/**
 * A parsed request head whose `Headers` is built when first asked for: a
 * plain request on a kept-alive connection is served from `fields` alone.
 */
class ParsedHead implements RequestHead {
  method: string;
  target: string;
  version: string;
  fields: [string, string][];
  text: string;
  #headers: Headers | null = null;

  constructor(
    method: string,
    target: string,
    version: string,
    fields: [string, string][],
    text: string,
  ) {
    this.method = method;
    this.target = target;
    this.version = version;
    this.fields = fields;
    this.text = text;
  }

  get headers(): Headers {
    if (this.#headers === null) {
      // Valid already: parseHeaderLines checked every name and value.
      this.#headers = new Headers();
      for (const [name, value] of this.fields) {
        this.#headers.append(name, value);
      }
    }
    return this.#headers;
  }
}

/**
 * The value of header field `name` (lower case) in a request head, as
 * `Headers.get` gives it: repeated fields joined with ", ", or `null`.
 */
export function headerValue(head: RequestHead, name: string): string | null {
  const fields = head.fields;
  if (fields === undefined) return head.headers.get(name);
  let value: string | null = null;
  for (let i = 0; i < fields.length; i++) {
    if (fields[i][0] === name) {
      value = value === null ? fields[i][1] : `${value}, ${fields[i][1]}`;
    }
  }
  return value;
}

/** Parses an HTTP/1.1 response head (the bytes up to and with `\r\n\r\n`). */
export function parseResponseHead(head: Uint8Array): ResponseHead | string {
  const lines = latin1(head).split("\r\n");
  lines.length -= 2;
  const statusLine = lines.shift() ?? "";
  const match = /^(HTTP\/\d\.\d) (\d{3})(?: (.*))?$/.exec(statusLine);
  if (match === null) {
    return `Malformed status line: ${JSON.stringify(statusLine.slice(0, 64))}`;
  }
  const headers = new Headers();
  const error = parseHeaderLines(lines, headers);
  if (error !== null) return error;
  return {
    version: match[1],
    status: Number(match[2]),
    statusText: match[3] ?? "",
    headers,
  };
}

/**
 * Splits a comma-separated header value into its trimmed, non-empty
 * elements (RFC 9110 5.6.1).
 */
export function headerList(value: string | null): string[] {
  if (value === null) return [];
  const items: string[] = [];
  for (const item of value.split(",")) {
    const trimmed = item.trim();
    if (trimmed !== "") items.push(trimmed);
  }
  return items;
}

/**
 * Whether the comma-separated header value contains `token` (ASCII),
 * ignoring case: the elements of {@linkcode headerList}, compared in place
 * rather than split into new strings (a few per upgrade).
 */
export function hasToken(value: string | null, token: string): boolean {
  if (value === null) return false;
  const length = token.length;
  for (let start = 0; start <= value.length;) {
    let end = value.indexOf(",", start);
    if (end === -1) end = value.length;
    let from = start, to = end;
    while (from < to && isTrimmed(value.charCodeAt(from))) from++;
    while (to > from && isTrimmed(value.charCodeAt(to - 1))) to--;
    if (to - from === length) {
      let i = 0;
      while (
        i < length &&
        asciiLower(value.charCodeAt(from + i)) ===
          asciiLower(token.charCodeAt(i))
      ) i++;
      if (i === length) return true;
    }
    start = end + 1;
  }
  return false;
}

function asciiLower(c: number): number {
  return c >= 0x41 && c <= 0x5a ? c + 0x20 : c;
}

/** What `String.prototype.trim()` removes. */
function isTrimmed(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d) || c === 0xa0 ||
    (c > 0xff &&
      (c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 ||
        c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 ||
        c === 0xfeff));
}

const STATUS_TEXT: Record<number, string> = {
  100: "Continue",
  101: "Switching Protocols",
  200: "OK",
  201: "Created",
  202: "Accepted",
  204: "No Content",
  206: "Partial Content",
  301: "Moved Permanently",
  302: "Found",
  303: "See Other",
  304: "Not Modified",
  307: "Temporary Redirect",
  308: "Permanent Redirect",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  406: "Not Acceptable",
  408: "Request Timeout",
  409: "Conflict",
  410: "Gone",
  411: "Length Required",
  413: "Content Too Large",
  415: "Unsupported Media Type",
  426: "Upgrade Required",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};

/** The reason phrase for a status code. */
export function statusText(status: number): string {
  return STATUS_TEXT[status] ?? "Unknown";
}

/**
 * Serializes a response head with a small text body (or none, for 101).
 */
export function encodeResponse(
  status: number,
  headers: Record<string, string>,
  body = "",
): Uint8Array {
  let head = `HTTP/1.1 ${status} ${statusText(status)}\r\n`;
  // Every response but the 101 ends the connection.
  const connection = headers["Connection"];
  if (status !== 101) {
    headers = {
      ...headers,
      "Connection": connection ? `${connection}, close` : "close",
    };
  }
  for (const [name, value] of Object.entries(headers)) {
    head += `${name}: ${value}\r\n`;
  }
  if (status !== 101) {
    const bodyBytes = encoder.encode(body);
    head +=
      `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${bodyBytes.length}\r\n\r\n`;
    const headBytes = encoder.encode(head);
    const out = new Uint8Array(headBytes.length + bodyBytes.length);
    out.set(headBytes);
    out.set(bodyBytes, headBytes.length);
    return out;
  }
  return encoder.encode(head + "\r\n");
}
