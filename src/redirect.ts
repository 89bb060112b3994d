/**
 * Redirects of the upgrade request, for `connect({ followRedirects })`:
 * where a 3xx points and what the next request may carry. Pure.
 *
 * @module
 */

import { WebSocketError } from "./errors.ts";
import type { ResponseHead } from "./http.ts";

/** The statuses followed: RFC 9110 15.4, all but 300 and 304. */
export const REDIRECT_STATUSES: ReadonlySet<number> = new Set([
  301,
  302,
  303,
  307,
  308,
]);

/**
 * Request headers that carry credentials, dropped once a redirect leaves
 * the origin (scheme, host and port) they were meant for, as `fetch` drops
 * `Authorization`.
 */
export const CREDENTIAL_HEADERS: readonly string[] = [
  "authorization",
  "cookie",
  "proxy-authorization",
];

/**
 * Where a redirect response points: its `Location` resolved against the
 * request URL `from`, `http:` read as `ws:` and `https:` as `wss:`, the
 * fragment dropped.
 *
 * @returns the next URL, or a `BAD_REDIRECT` error: no `Location`, one that
 * is not an HTTP or WebSocket URL, or a `wss:` to `ws:` downgrade
 */
export function redirectTarget(
  response: ResponseHead,
  from: URL,
): URL | WebSocketError {
  const status = `${response.status} ${response.statusText}`.trimEnd();
  const bad = (message: string) =>
    new WebSocketError("BAD_REDIRECT", `Redirect not followed: ${message}`);
  const location = response.headers.get("location");
  if (location === null || location.trim() === "") {
    return bad(`${status} has no Location header`);
  }
  let next: URL;
  try {
    next = new URL(location.trim(), from);
  } catch {
    return bad(`${status} to an invalid Location ${JSON.stringify(location)}`);
  }
  if (next.protocol === "http:") next.protocol = "ws:";
  else if (next.protocol === "https:") next.protocol = "wss:";
  if (next.protocol !== "ws:" && next.protocol !== "wss:") {
    return bad(`${status} to ${next.protocol}, not an HTTP or WebSocket URL`);
  }
  next.hash = "";
  if (from.protocol === "wss:" && next.protocol === "ws:") {
    return bad(
      `${status} from ${from.href} to ${next.href} would drop TLS (wss: to ws:)`,
    );
  }
  return next;
}
