/**
 * The opening handshake (RFC 6455 4), both sides, decided with no I/O: the
 * server validates a parsed request and builds its 101 (or says what to
 * reject it with); the client builds its request and checks the response.
 * `server.ts` and `client.ts` only move the bytes. Model: Python
 * `websockets`' `ServerProtocol.accept` / `reject` and
 * `ClientProtocol.process_response`.
 *
 * Pure: no I/O, no timers, no promises.
 *
 * @module
 */

import {
  acceptDeflate,
  type CompressionConfig,
  deflateOffer,
  type DeflateParams,
  negotiateDeflate,
} from "./deflate.ts";
import { WebSocketError } from "./errors.ts";
import {
  hasToken,
  headerList,
  headerValue,
  isToken,
  type RequestHead,
  type ResponseHead,
} from "./http.ts";
import { sha1 } from "./sha1.ts";
import { encodeUtf8 } from "./utf8.ts";

const encoder = new TextEncoder();

/** RFC 6455 1.3: the GUID appended to the key before hashing. */
export const WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/**
 * `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 4.2.2):
 * base64 of the SHA-1 of the key and the GUID.
 */
export function acceptKey(key: string): string {
  const accept = new Uint8Array(ACCEPT_LENGTH);
  acceptKeyInto(key, accept, 0);
  return String.fromCharCode.apply(null, accept as unknown as number[]);
}

/** The length of a `Sec-WebSocket-Accept`: base64 of 20 bytes. */
const ACCEPT_LENGTH = 28;
// A valid key (24 base64 characters) and the GUID, hashed from here: no
// string joined, encoded and decoded back per handshake.
const KEY_INPUT = new Uint8Array(24 + WEBSOCKET_GUID.length);
KEY_INPUT.set(encoder.encode(WEBSOCKET_GUID), 24);

/** Writes `acceptKey(key)` into `out` at `at`, as ASCII bytes. */
function acceptKeyInto(key: string, out: Uint8Array, at: number): void {
  let ascii = key.length === 24;
  for (let i = 0; ascii && i < 24; i++) {
    const c = key.charCodeAt(i);
    KEY_INPUT[i] = c;
    ascii = c < 0x80;
  }
  const digest = ascii
    ? sha1(KEY_INPUT)
    : sha1(encodeUtf8(key + WEBSOCKET_GUID));
  base64Into(digest, out, at);
}

const BASE64 =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64_BYTES = encoder.encode(BASE64);
const PAD = 0x3d; // "="

/**
 * Standard base64 with padding (RFC 4648 4) of `bytes`, written as ASCII
 * into `out` at `at` (which must have room for it).
 */
function base64Into(bytes: Uint8Array, out: Uint8Array, at: number): void {
  const A = BASE64_BYTES;
  let i = 0;
  for (; i + 2 < bytes.length; i += 3, at += 4) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out[at] = A[n >>> 18];
    out[at + 1] = A[(n >>> 12) & 63];
    out[at + 2] = A[(n >>> 6) & 63];
    out[at + 3] = A[n & 63];
  }
  const rest = bytes.length - i;
  if (rest === 0) return;
  const n = (bytes[i] << 16) | (rest === 2 ? bytes[i + 1] << 8 : 0);
  out[at] = A[n >>> 18];
  out[at + 1] = A[(n >>> 12) & 63];
  out[at + 2] = rest === 2 ? A[(n >>> 6) & 63] : PAD;
  out[at + 3] = PAD;
}

/** Standard base64 with padding (RFC 4648 4), without `btoa`'s round trip through a string. */
export function base64(bytes: Uint8Array): string {
  const out = new Uint8Array(Math.ceil(bytes.length / 3) * 4);
  base64Into(bytes, out, 0);
  return String.fromCharCode.apply(null, out as unknown as number[]);
}

/** Whether `key` is base64 of 16 bytes (RFC 6455 4.1, item 7). */
export function isValidKey(key: string): boolean {
  return /^[A-Za-z0-9+/]{22}==$/.test(key);
}

/** A fresh random `Sec-WebSocket-Key`. */
export function generateKey(): string {
  return btoa(
    String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))),
  );
}

/** What a valid upgrade request asks for. */
export interface UpgradeRequest {
  key: string;
  protocols: string[];
  extensions: string[];
}

/** Why a request is not a valid upgrade: the response to send. */
export interface UpgradeRejection {
  status: 400 | 405 | 426;
  message: string;
  headers: Record<string, string>;
}

/**
 * Validates a parsed request as a WebSocket upgrade (RFC 6455 4.2.1).
 *
 * A request without `Upgrade: websocket` is plain HTTP (426, or the
 * server's `onRequest`); a wrong `Sec-WebSocket-Version` is 426 with
 * `Sec-WebSocket-Version: 13`; anything else malformed is 400.
 */
export function validateUpgrade(
  request: RequestHead,
): UpgradeRequest | UpgradeRejection {
  // headerValue() reads the fields as sent: no `Headers` is built.
  if (!hasToken(headerValue(request, "upgrade"), "websocket")) {
    return {
      status: 426,
      message: "Upgrade required: this endpoint serves WebSocket only",
      headers: { "Upgrade": "websocket", "Connection": "Upgrade" },
    };
  }
  if (request.method !== "GET") {
    return badUpgrade(
      `Invalid upgrade: method must be GET, received ${request.method}`,
    );
  }
  if (request.version !== "HTTP/1.1") {
    return badUpgrade(
      `Invalid upgrade: HTTP version must be 1.1, received ${request.version}`,
    );
  }
  if (headerValue(request, "host") === null) {
    return badUpgrade("Invalid upgrade: missing Host header");
  }
  if (!hasToken(headerValue(request, "connection"), "upgrade")) {
    return badUpgrade(
      "Invalid upgrade: Connection header must contain Upgrade",
    );
  }
  const version = headerValue(request, "sec-websocket-version");
  if (version !== "13") {
    return {
      status: 426,
      message: `Unsupported WebSocket version: ${
        version === null ? "none" : JSON.stringify(version)
      }`,
      headers: { "Sec-WebSocket-Version": "13" },
    };
  }
  const key = headerValue(request, "sec-websocket-key");
  if (key === null || !isValidKey(key)) {
    return badUpgrade(
      "Invalid upgrade: Sec-WebSocket-Key must be base64 of 16 bytes",
    );
  }
  const protocols = headerList(headerValue(request, "sec-websocket-protocol"));
  if (!protocols.every((p) => isToken(p))) {
    return badUpgrade("Invalid upgrade: malformed Sec-WebSocket-Protocol");
  }
  return {
    key,
    protocols,
    extensions: headerList(headerValue(request, "sec-websocket-extensions")),
  };
}

/** A 400 for an invalid upgrade. */
function badUpgrade(message: string): UpgradeRejection {
  return { status: 400, message, headers: {} };
}

/**
 * Serializes a client's upgrade request (RFC 6455 4.1), with
 * `Sec-WebSocket-Extensions: extensions` unless it is empty.
 */
export function encodeRequest(
  url: URL,
  key: string,
  protocols: readonly string[],
  headers: Headers,
  extensions = "",
): Uint8Array {
  const path = (url.pathname || "/") + url.search;
  let head = `GET ${path} HTTP/1.1\r\n`;
  const lines = new Map<string, string>([
    ["Host", url.host],
    ["Upgrade", "websocket"],
    ["Connection", "Upgrade"],
    ["Sec-WebSocket-Key", key],
    ["Sec-WebSocket-Version", "13"],
  ]);
  if (protocols.length > 0) {
    lines.set("Sec-WebSocket-Protocol", protocols.join(", "));
  }
  if (extensions !== "") lines.set("Sec-WebSocket-Extensions", extensions);
  // Negotiation headers belong to the options, not to `headers`.
  const reserved = new Set(
    [...lines.keys(), "Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions"].map(
      (k) => k.toLowerCase(),
    ),
  );
  for (const [name, value] of lines) head += `${name}: ${value}\r\n`;
  // User headers never override the ones the handshake depends on.
  for (const [name, value] of headers) {
    if (!reserved.has(name)) head += `${name}: ${value}\r\n`;
  }
  return encoder.encode(head + "\r\n");
}

// -- What each side saw --

/** The upgrade request as the server saw it (the seed's `sock.stream`). */
export interface UpgradeRequestInfo {
  /** The request method (always `GET` for a valid upgrade). */
  method: string;
  /** The full URL: scheme, `Host` and request target. */
  url: string;
  /** The request headers. */
  headers: Headers;
}

/** The handshake response a client received. */
export interface UpgradeResponseInfo {
  /** The status code (101). */
  status: number;
  /** The response headers. */
  headers: Headers;
}

// -- The server's side --

/** Headers of the 101 that the `upgrade` hook's `headers` cannot set. */
const RESERVED_UPGRADE_HEADERS = new Set([
  "upgrade",
  "connection",
  "sec-websocket-accept",
  "sec-websocket-protocol",
  "sec-websocket-extensions",
  "content-length",
  "transfer-encoding",
]);

/**
 * The subprotocol a server picks by default: the first the client offered
 * that the server speaks, `""` when none.
 */
export function selectProtocol(
  supported: readonly string[],
  offered: readonly string[],
): string {
  return offered.find((p) => supported.includes(p)) ?? "";
}

/**
 * Checks a subprotocol chosen by the application (the `upgrade` hook).
 *
 * @throws {TypeError} not a string, or not one the client offered
 */
export function checkProtocol(
  protocol: unknown,
  offered: readonly string[],
): string {
  if (typeof protocol !== "string") {
    throw new TypeError(
      `Invalid upgrade decision: protocol must be a string, received ${typeof protocol}`,
    );
  }
  // RFC 6455 4.2.2: the server picks one of the values the client offered.
  if (protocol !== "" && !offered.includes(protocol)) {
    throw new TypeError(
      `Invalid upgrade decision: protocol ${
        JSON.stringify(protocol)
      } was not offered by the client, which offered ${
        offered.length === 0 ? "none" : offered.join(", ")
      }`,
    );
  }
  return protocol;
}

/** How the server accepts an upgrade. */
export interface AcceptChoice {
  /** The subprotocol, `""` for none. */
  protocol: string;
  /** Extra headers for the 101; the handshake's own are dropped from them. */
  headers?: Iterable<[string, string]> | null;
  /** The server's permessage-deflate settings, `null` when off. */
  compression: CompressionConfig | null;
}

/** An accepted upgrade: the 101 to send and what it agreed. */
export interface Accepted {
  /** The whole 101 response head. */
  response: Uint8Array;
  /** The subprotocol, `""` for none. */
  protocol: string;
  /** The `Sec-WebSocket-Extensions` answered, `""` for none. */
  extensions: string;
  /** The permessage-deflate parameters in force, `null` when none. */
  deflate: DeflateParams | null;
}

/**
 * Accepts a valid upgrade (RFC 6455 4.2.2): negotiates permessage-deflate
 * with the client's offers (RFC 7692 7.1) and builds the 101.
 *
 * @param request the parsed request
 * @param upgrade what {@linkcode validateUpgrade} found in it
 * @param choice the subprotocol, extra headers and compression settings
 * @returns the 101's bytes and what it agreed
 */
export function acceptUpgrade(
  request: RequestHead,
  upgrade: UpgradeRequest,
  choice: AcceptChoice,
): Accepted {
  // The lines after Sec-WebSocket-Accept, often none.
  let tail = "";
  if (choice.protocol !== "") {
    tail += `Sec-WebSocket-Protocol: ${choice.protocol}\r\n`;
  }
  const deflate = choice.compression === null ? null : negotiateDeflate(
    headerValue(request, "sec-websocket-extensions"),
    choice.compression,
  );
  if (deflate !== null) {
    tail += `Sec-WebSocket-Extensions: ${deflate.response}\r\n`;
  }
  for (const [name, value] of choice.headers ?? []) {
    if (!RESERVED_UPGRADE_HEADERS.has(name.toLowerCase())) {
      tail += `${name}: ${value}\r\n`;
    }
  }
  return {
    response: switchingProtocols(upgrade.key, tail),
    protocol: choice.protocol,
    extensions: deflate?.response ?? "",
    deflate: deflate?.params ?? null,
  };
}

// The 101 up to the accept key, encoded once: the response is built as
// bytes, with no head string joined and encoded per handshake.
const SWITCHING_START = encoder.encode(
  "HTTP/1.1 101 Switching Protocols\r\n" +
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
);
const CRLF = 0x0d0a;

/** The 101's bytes: the fixed lines, the accept key, `tail`, the blank line. */
function switchingProtocols(key: string, tail: string): Uint8Array {
  const tailBytes = tail === "" ? null : encodeUtf8(tail);
  const start = SWITCHING_START.length;
  const response = new Uint8Array(
    start + ACCEPT_LENGTH + 4 + (tailBytes?.length ?? 0),
  );
  response.set(SWITCHING_START);
  acceptKeyInto(key, response, start);
  let at = start + ACCEPT_LENGTH;
  response[at++] = CRLF >> 8;
  response[at++] = CRLF & 0xff;
  if (tailBytes !== null) {
    response.set(tailBytes, at);
    at += tailBytes.length;
  }
  response[at++] = CRLF >> 8;
  response[at] = CRLF & 0xff;
  return response;
}

// -- The client's side --

/** What a client asks for. */
export interface ClientOffer {
  /** The `Sec-WebSocket-Key` sent (see {@linkcode generateKey}). */
  key: string;
  /** The subprotocols offered, in order of preference. */
  protocols: readonly string[];
  /** The permessage-deflate settings offered, `null` when off. */
  compression: CompressionConfig | null;
}

/** What a successful handshake agreed, as the client sees it. */
export interface Negotiated {
  /** The subprotocol the server chose, `""` for none. */
  protocol: string;
  /** The server's `Sec-WebSocket-Extensions`, `""` for none. */
  extensions: string;
  /** The permessage-deflate parameters in force, `null` when none. */
  deflate: DeflateParams | null;
}

/**
 * The client's upgrade request (RFC 6455 4.1) for `offer`, with the
 * application's extra `headers` (never the handshake's own).
 */
export function clientRequest(
  url: URL,
  headers: Headers,
  offer: ClientOffer,
): Uint8Array {
  return encodeRequest(
    url,
    offer.key,
    offer.protocols,
    headers,
    offer.compression === null ? "" : deflateOffer(offer.compression),
  );
}

/**
 * Checks the server's response to `offer` (RFC 6455 4.1, the client's
 * checks; RFC 7692 7.1): a 101 with `Upgrade`, `Connection`, the right
 * `Sec-WebSocket-Accept`, and only a subprotocol and extensions that were
 * offered.
 *
 * @returns what was agreed, or a `BAD_HANDSHAKE` error saying what was wrong
 */
export function processResponse(
  response: ResponseHead,
  offer: ClientOffer,
): Negotiated | WebSocketError {
  const bad = (message: string) =>
    new WebSocketError("BAD_HANDSHAKE", `Handshake failed: ${message}`);
  if (response.status !== 101) {
    return bad(
      `expected 101, received ${response.version} ${response.status} ${response.statusText}`
        .trimEnd(),
    );
  }
  const h = response.headers;
  if (!hasToken(h.get("upgrade"), "websocket")) {
    return bad(
      `Upgrade header must be websocket, received ${
        h.get("upgrade") ?? "none"
      }`,
    );
  }
  if (!hasToken(h.get("connection"), "upgrade")) {
    return bad(
      `Connection header must contain Upgrade, received ${
        h.get("connection") ?? "none"
      }`,
    );
  }
  const accept = h.get("sec-websocket-accept");
  const expected = acceptKey(offer.key);
  if (accept !== expected) {
    return bad(
      `Sec-WebSocket-Accept must be ${expected}, received ${accept ?? "none"}`,
    );
  }
  const protocol = h.get("sec-websocket-protocol") ?? "";
  if (protocol !== "" && !offer.protocols.includes(protocol)) {
    return bad(
      `the server chose subprotocol ${protocol}, which was not offered`,
    );
  }
  const extensions = h.get("sec-websocket-extensions")?.trim() ?? "";
  if (extensions === "") return { protocol, extensions, deflate: null };
  if (offer.compression === null) {
    return bad(
      `the server chose extensions ${extensions}, which were not offered`,
    );
  }
  // RFC 7692 7.1: a response the offer did not allow fails the connection.
  const deflate = acceptDeflate(extensions, offer.compression);
  if (typeof deflate === "string") return bad(deflate);
  return { protocol, extensions, deflate };
}
