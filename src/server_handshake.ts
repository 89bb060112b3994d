/**
 * One accepted connection on the server side, from its first byte to a
 * {@linkcode Socket} or a closed connection: the head is read and checked,
 * plain requests go to `onRequest` (kept alive, maybe upgraded after them),
 * the `upgrade` hook decides, and the 101 that `handshake.ts` built is
 * written. `server.ts` accepts connections and tracks them.
 *
 * @module
 */

import { PerMessageDeflate } from "./deflate_codec.ts";
import {
  acceptUpgrade,
  checkProtocol,
  selectProtocol,
  type UpgradeRequestInfo,
  validateUpgrade,
} from "./handshake.ts";
import {
  hasToken,
  headersOfText,
  headerValue,
  parseRequestHead,
  type RequestHead,
} from "./http.ts";
import { readRequestHead } from "./http_head.ts";
import { serveHttp } from "./http_conn.ts";
import {
  hostOf,
  internalError,
  refuseRequest,
  respond,
} from "./http_server.ts";
import type {
  ConnectionInfo,
  FinishListener,
  HandshakeConfig,
  UpgradeDecision,
} from "./options.ts";
import { fail, originOf, PendingConn, writeAll } from "./pending_conn.ts";
import { Socket } from "./socket.ts";
import { topicRegistry } from "./topics.ts";

/** How a server follows its connections through the handshake. */
export interface ConnTracker {
  /** `handshake`: cut at once on shutdown; `request`: given closeTimeout. */
  enter(pending: PendingConn, phase: "handshake" | "request"): void;
  leave(pending: PendingConn): void;
  closing(): boolean;
}

/**
 * Runs the server side of the handshake on `conn`. Resolves with the
 * socket, or `null` when the connection got an HTTP response instead
 * (rejected, malformed, or served by `onRequest`) and was closed.
 */
export async function serverHandshake(
  conn: Deno.Conn,
  config: HandshakeConfig,
  tracker: ConnTracker | null,
  onFinish: FinishListener | null = null,
): Promise<Socket | null> {
  const pending = new PendingConn(conn);
  tracker?.enter(pending, "handshake");
  // Frames are coalesced per event-loop turn already; Nagle only adds delay.
  if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
  let cancelDeadline = pending.deadline(config.handshakeTimeout);
  try {
    const maxSize = config.maxHandshakeSize;
    let read = await readRequestHead(conn, maxSize);
    if (read === "eof") return fail(conn);
    // The client may still be sending: answer, then linger so that its
    // unread bytes do not turn our close into a reset that loses the answer.
    if (read === "too_large") {
      cancelDeadline();
      return refuseRequest(
        pending,
        431,
        `Request header fields too large: limit is ${maxSize} bytes`,
      );
    }
    if ("status" in read) {
      // Bytes that cannot be HTTP/1.x: refused at once, not at the timeout.
      cancelDeadline();
      return refuseRequest(pending, read.status, read.message);
    }
    let request = parseRequestHead(read.head);
    if ("status" in request) {
      return fail(conn, request.status, {}, request.message);
    }
    const { secure, info } = originOf(conn, config.secure);

    if (
      config.onRequest !== undefined &&
      !hasToken(headerValue(request, "upgrade"), "websocket")
    ) {
      // Plain HTTP, maybe many requests, maybe an upgrade after them.
      const first = { head: request, read, cancelDeadline };
      const next = await serveHttp(pending, first, config, {
        secure,
        info,
        tracker,
      });
      if (next === null) return null;
      ({ head: request, read, cancelDeadline } = next);
    }

    const upgrade = validateUpgrade(request);
    if ("status" in upgrade) {
      return fail(conn, upgrade.status, upgrade.headers, upgrade.message);
    }
    const requestInfo = upgradeRequestInfo(request, secure, info);
    let protocol = selectProtocol(config.protocols, upgrade.protocols);
    let extraHeaders: Headers | null = null;
    let data: unknown = undefined;
    if (config.upgrade !== undefined) {
      let decision: UpgradeDecision;
      try {
        decision = await pending.race(
          config.upgrade(hookRequest(requestInfo, upgrade.protocols), info),
        );
        if (!(decision instanceof Response) && decision != null) {
          if (typeof decision !== "object") {
            throw new TypeError(
              `Invalid upgrade decision: expected a Response, an object or nothing, received ${typeof decision}`,
            );
          }
          if (decision.protocol !== undefined) {
            protocol = checkProtocol(decision.protocol, upgrade.protocols);
          }
          if (decision.headers !== undefined) {
            extraHeaders = new Headers(decision.headers);
          }
          data = decision.data;
        }
      } catch (error) {
        if (pending.signal.aborted) return fail(conn);
        config.onError(error);
        decision = internalError();
      }
      if (decision instanceof Response) {
        cancelDeadline();
        await respond(pending, decision, request.method, config);
        return null;
      }
    }

    const accepted = acceptUpgrade(request, upgrade, {
      protocol,
      headers: extraHeaders,
      compression: config.compression,
    });
    await writeAll(conn, accepted.response);
    return new Socket({
      conn,
      client: false,
      head: read.rest,
      readBuffer: read.buffer,
      protocol,
      extensions: accepted.extensions,
      request: requestInfo,
      response: null,
      limits: config.limits,
      deflate: accepted.deflate === null ? null : new PerMessageDeflate({
        client: false,
        params: accepted.deflate,
        config: config.compression!,
        maxMessageSize: config.limits.maxMessageSize,
      }),
      topics: config.topics === undefined
        ? undefined
        : topicRegistry(config.topics),
      data,
      onFinish,
    });
  } catch {
    // Reset by the peer, or cut by the handshake timeout or a shutdown.
    return fail(conn);
  } finally {
    cancelDeadline();
    tracker?.leave(pending);
  }
}

function upgradeRequestInfo(
  request: RequestHead,
  secure: boolean,
  info: ConnectionInfo,
): UpgradeRequestInfo {
  const scheme = secure ? "wss" : "ws";
  const host = headerValue(request, "host") ?? hostOf(info.localAddr);
  const url = upgradeUrl(scheme, host, request.target);
  return new RequestInfo(request.method, url, request.text ?? request.headers);
}

/**
 * A server socket's `request`: what it keeps of the upgrade request is the
 * head's text (one string), its `Headers` built from it when first read.
 * An idle socket was holding a `Headers` and the parsed fields, about 1.5
 * KiB, for a property most handlers never read after the upgrade.
 */
// RequestInfo's `headers`, set in its static block (it reads #source).
let HEADERS: PropertyDescriptor;

class RequestInfo implements UpgradeRequestInfo {
  method: string;
  url: string;
  declare headers: Headers;
  #source: string | Headers;

  constructor(method: string, url: string, source: string | Headers) {
    this.method = method;
    this.url = url;
    this.#source = source;
    // An own, enumerable property, as `headers` of a plain object is
    // (spread, JSON, deepEqual see it); one accessor pair for all.
    Object.defineProperty(this, "headers", HEADERS);
  }

  static {
    HEADERS = {
      get(this: RequestInfo): Headers {
        const source = this.#source;
        if (typeof source !== "string") return source;
        return this.#source = headersOfText(source);
      },
      set(this: RequestInfo, headers: Headers) {
        this.#source = headers;
      },
      enumerable: true,
      configurable: true,
    };
  }
}

/**
 * What the `upgrade` hook gets: the socket's request and the offered
 * subprotocols. `headers` is the socket's, built only if read.
 */
function hookRequest(
  request: UpgradeRequestInfo,
  protocols: string[],
): UpgradeRequestInfo & { protocols: string[] } {
  // Replacing the hook's `headers` leaves the socket's alone.
  let own: Headers | undefined;
  return {
    method: request.method,
    url: request.url,
    get headers() {
      return own ?? request.headers;
    },
    set headers(headers: Headers) {
      own = headers;
    },
    protocols,
  };
}

// The URL of the last upgrade: clients of one server tend to ask for the
// same one, and parsing it was a measurable part of a short connection.
let lastUrl = { scheme: "", host: "", target: "", url: "" };

function upgradeUrl(scheme: string, host: string, target: string): string {
  const last = lastUrl;
  if (last.target === target && last.host === host && last.scheme === scheme) {
    return last.url;
  }
  let url: string;
  try {
    url = new URL(target, `${scheme}://${host}`).href;
  } catch {
    url = `${scheme}://${host}${target}`;
  }
  lastUrl = { scheme, host, target, url };
  return url;
}
