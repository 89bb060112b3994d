/**
 * A plain HTTP/1.1 request's framing: how its body is delimited (RFC 9112
 * 6), and its full URL.
 *
 * @module
 */

import { headerList, headerValue, type RequestHead } from "./http.ts";

/** Why a request body was not read: the status to answer with. */
export interface BodyError {
  status: 400 | 413 | 501;
  message: string;
}

/**
 * How a request frames its body (RFC 9112 6): `null` for none, a byte
 * count for `Content-Length`, `"chunked"`, or the error to answer with.
 */
export function bodyLength(
  head: RequestHead,
  maxSize: number,
): number | "chunked" | null | BodyError {
  const transferEncoding = headerValue(head, "transfer-encoding");
  const contentLength = headerValue(head, "content-length");
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

// A Host that cannot change the URL's structure when written after
// "scheme://": a name or address and a port. What else the URL parser
// would do to it (lower case, drop a default port, check punycode or a
// port's range) `Request` does, and a host it refuses fails there.
const PLAIN_HOST = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;
// The last Host that passed: a connection sends the same one each time.
let lastHost = "";

/**
 * An origin-form target (`/path?query`) written after `scheme://host`, to
 * be parsed (and normalized) once, by `Request`; `null` for anything else.
 * Unlike resolving the target against the host, a target that starts with
 * `//` stays a path (RFC 9112 3.2.1: it is an absolute path).
 */
function originFormUrl(
  scheme: string,
  host: string,
  target: string,
): string | null {
  if (target.charCodeAt(0) !== 0x2f) return null;
  if (host !== lastHost) {
    if (!PLAIN_HOST.test(host)) return null;
    lastHost = host;
  }
  return `${scheme}://${host}${target}`;
}

/**
 * The full URL of a request: `target` (origin-form or absolute-form)
 * resolved against the scheme and `Host`. `null` when it does not parse.
 * Not normalized: `new Request(url).url` is.
 */
export function requestUrl(
  head: RequestHead,
  scheme: string,
  fallbackHost: string,
): string | null {
  const host = headerValue(head, "host") ?? fallbackHost;
  // The common case, without a URL parse here (Request parses it anyway).
  const simple = originFormUrl(scheme, host, head.target);
  if (simple !== null) return simple;
  try {
    return new URL(head.target, `${scheme}://${host}`).href;
  } catch {
    return null;
  }
}
