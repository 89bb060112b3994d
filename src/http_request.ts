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

// What the URL parser keeps as it is: a lower-case name whose last label
// starts with a letter (and no "xn--" label, punycode it would check), or a dotted-quad address,
// with a port that is not the scheme's default; a path without dot
// segments or percent signs, a query of plain characters.
const SIMPLE_HOST =
  /^(?:(?:[a-z0-9-]+\.)*[a-z][a-z0-9-]*|(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d))(?::([1-9]\d{0,4}))?$/;
const SIMPLE_TARGET =
  /^(?:\/[A-Za-z0-9_~!$&'()*+,;=:@.-]*)+(?:\?[A-Za-z0-9_~!$&()*+,;=:@/?%.-]*)?$/;
const DOT_SEGMENT = /\/\.\.?(?:[/?]|$)/;

/** `scheme://host` + `target` as the URL parser would write it, or `null`. */
function simpleUrl(
  scheme: string,
  host: string,
  target: string,
): string | null {
  const match = SIMPLE_HOST.exec(host);
  if (
    match === null || host.includes("xn--") || !SIMPLE_TARGET.test(target) ||
    DOT_SEGMENT.test(target)
  ) {
    return null;
  }
  const port = match[1];
  if (
    port !== undefined &&
    (Number(port) > 65535 || port === (scheme === "https" ? "443" : "80"))
  ) return null;
  return `${scheme}://${host}${target}`;
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
  const host = headerValue(head, "host") ?? fallbackHost;
  // The common case, without a URL parse here (Request parses it anyway).
  const simple = simpleUrl(scheme, host, head.target);
  if (simple !== null) return simple;
  try {
    return new URL(head.target, `${scheme}://${host}`).href;
  } catch {
    return null;
  }
}
