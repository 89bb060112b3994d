/**
 * permessage-deflate (RFC 7692), everything but the compression itself:
 * the `compression` option's checks and defaults, and the negotiation of
 * the extension's parameters (the server's choice among offers, the
 * client's offer and its check of the response). The header grammar is in
 * `extensions.ts`, the codec in `deflate_codec.ts`.
 *
 * Pure: no I/O, no timers, no promises (and no `node:zlib`).
 *
 * @module
 */

import { formatExtension, parseExtensions } from "./extensions.ts";

/** The extension's name in `Sec-WebSocket-Extensions`. */
export const PERMESSAGE_DEFLATE = "permessage-deflate";

/**
 * permessage-deflate settings (RFC 7692) for `listen`, `accept` and
 * `connect`. On a server the `server*` fields describe what this side does
 * and the `client*` fields what it asks of clients; on a client it is the
 * other way round.
 *
 * @example Compress between our server and client
 * ```ts
 * import { connect, listen } from "@silly/websocket";
 * import assert from "node:assert/strict";
 *
 * const server = listen({
 *   addr: "127.0.0.1:0",
 *   compression: { serverNoContextTakeover: true },
 *   async handler(sock) {
 *     for await (const msg of sock) {
 *       if (msg.type === "text") await sock.write(msg.data, "text");
 *     }
 *   },
 * });
 * const sock = await connect(`ws://127.0.0.1:${server.addr.port}`, {
 *   compression: true,
 * });
 * assert.equal(sock.extensions, "permessage-deflate; server_no_context_takeover");
 * const json = JSON.stringify(Array.from({ length: 100 }, (_, id) => ({ id, ok: true })));
 * await sock.write(json, "text"); // over the 1024-byte threshold: compressed
 * assert.deepEqual(await sock.read(), { type: "text", data: json });
 * await sock.close();
 * await server.close();
 * ```
 */
export interface CompressionOptions {
  /**
   * Data messages shorter than this many bytes are sent uncompressed
   * (compressing them costs more CPU than it saves bytes).
   * @default {1024}
   */
  threshold?: number;
  /**
   * zlib compression level, 0 (store) to 9 (smallest). On JSON-like text,
   * level 1 deflates about 4 times faster than zlib's default 6, for
   * output about 40% bigger (bench/deflate.ts).
   * @default {1}
   */
  level?: number;
  /**
   * The server compresses each message on its own (no context takeover):
   * a little less compression, and no zlib state kept per connection for
   * sending. On a client, asks the server for it.
   * @default {false}
   */
  serverNoContextTakeover?: boolean;
  /**
   * The client compresses each message on its own. On a server, asks the
   * clients for it (the server then keeps no zlib state per connection for
   * receiving).
   * @default {false}
   */
  clientNoContextTakeover?: boolean;
  /**
   * Largest LZ77 window the server compresses with, as a power of two
   * (8 to 15; zlib uses 9 for 8). On a client, asks the server for it.
   * @default {15}
   */
  serverMaxWindowBits?: number;
  /**
   * Largest LZ77 window the client compresses with (8 to 15). On a server,
   * asks the clients for it, and declines clients that cannot limit it.
   * @default {15}
   */
  clientMaxWindowBits?: number;
}

/** {@linkcode CompressionOptions} with the defaults applied. */
export interface CompressionConfig {
  /** See {@linkcode CompressionOptions.threshold}. */
  threshold: number;
  /** See {@linkcode CompressionOptions.level}. */
  level: number;
  /** See {@linkcode CompressionOptions.serverNoContextTakeover}. */
  serverNoContextTakeover: boolean;
  /** See {@linkcode CompressionOptions.clientNoContextTakeover}. */
  clientNoContextTakeover: boolean;
  /** See {@linkcode CompressionOptions.serverMaxWindowBits}; `undefined` when not set. */
  serverMaxWindowBits: number | undefined;
  /** See {@linkcode CompressionOptions.clientMaxWindowBits}; `undefined` when not set. */
  clientMaxWindowBits: number | undefined;
}

/** The default {@linkcode CompressionOptions.threshold}. */
export const DEFAULT_THRESHOLD = 1024;
/** The default {@linkcode CompressionOptions.level}. */
export const DEFAULT_LEVEL = 1;

/**
 * Checks the `compression` option and applies its defaults, whether or not
 * this runtime can run the codec (`compressionConfig` in
 * `deflate_codec.ts` asks that too).
 *
 * @returns the settings, or `null` when compression is off (`false` or
 *   `undefined`)
 * @throws {TypeError} a field is invalid (the message names it)
 */
export function checkCompressionOptions(
  value: unknown,
): CompressionConfig | null {
  if (value === undefined || value === false) return null;
  if (value !== true && (typeof value !== "object" || value === null)) {
    throw new TypeError(
      `Invalid option compression: expected a boolean or an object, received ${
        value === null ? "null" : typeof value
      }`,
    );
  }
  const options: CompressionOptions = value === true ? {} : value;
  const threshold = options.threshold ?? DEFAULT_THRESHOLD;
  if (
    typeof threshold !== "number" || Number.isNaN(threshold) || threshold < 0
  ) {
    throw new TypeError(
      `Invalid option compression.threshold: expected a non-negative number, received ${threshold}`,
    );
  }
  const level = options.level ?? DEFAULT_LEVEL;
  if (!Number.isInteger(level) || level < 0 || level > 9) {
    throw new TypeError(
      `Invalid option compression.level: expected an integer from 0 to 9, received ${level}`,
    );
  }
  for (
    const name of [
      "serverNoContextTakeover",
      "clientNoContextTakeover",
    ] as const
  ) {
    const flag = options[name];
    if (flag !== undefined && typeof flag !== "boolean") {
      throw new TypeError(
        `Invalid option compression.${name}: expected a boolean, received ${typeof flag}`,
      );
    }
  }
  for (const name of ["serverMaxWindowBits", "clientMaxWindowBits"] as const) {
    const bits = options[name];
    if (
      bits !== undefined && !(Number.isInteger(bits) && bits >= 8 && bits <= 15)
    ) {
      throw new TypeError(
        `Invalid option compression.${name}: expected an integer from 8 to 15, received ${bits}`,
      );
    }
  }
  return {
    threshold,
    level,
    serverNoContextTakeover: options.serverNoContextTakeover ?? false,
    clientNoContextTakeover: options.clientNoContextTakeover ?? false,
    serverMaxWindowBits: options.serverMaxWindowBits,
    clientMaxWindowBits: options.clientMaxWindowBits,
  };
}

// -- Negotiation (RFC 7692 7.1) --

/** The permessage-deflate parameters of one offer or response. */
export interface DeflateParams {
  /** `server_no_context_takeover` is present. */
  serverNoContextTakeover: boolean;
  /** `client_no_context_takeover` is present. */
  clientNoContextTakeover: boolean;
  /** `undefined` when absent. */
  serverMaxWindowBits: number | undefined;
  /** `undefined` when absent; `true` when present without a value (offers only). */
  clientMaxWindowBits: number | true | undefined;
}

const WINDOW_BITS = /^(?:[89]|1[0-5])$/;

/**
 * Reads the parameters of a permessage-deflate offer (`offer` true) or
 * response (RFC 7692 7.1).
 *
 * @returns the parameters, or why they are invalid: an unknown or
 *   duplicate parameter, or a bad value
 */
export function deflateParams(
  params: [string, string | null][],
  offer: boolean,
): DeflateParams | string {
  const result: DeflateParams = {
    serverNoContextTakeover: false,
    clientNoContextTakeover: false,
    serverMaxWindowBits: undefined,
    clientMaxWindowBits: undefined,
  };
  const seen = new Set<string>();
  for (const [name, value] of params) {
    // RFC 7692 7.1: an offer or response with a duplicate parameter is invalid.
    if (seen.has(name)) return `duplicate parameter ${name}`;
    seen.add(name);
    switch (name) {
      case "server_no_context_takeover":
      case "client_no_context_takeover":
        // RFC 7692 7.1.1: these parameters have no value.
        if (value !== null) return `parameter ${name} must have no value`;
        if (name === "server_no_context_takeover") {
          result.serverNoContextTakeover = true;
        } else result.clientNoContextTakeover = true;
        break;
      case "server_max_window_bits":
        if (value === null || !WINDOW_BITS.test(value)) {
          return `parameter ${name} must be 8 to 15, received ${
            value ?? "none"
          }`;
        }
        result.serverMaxWindowBits = Number(value);
        break;
      case "client_max_window_bits":
        // RFC 7692 7.1.2.2: a client may offer it without a value; a
        // response always carries one.
        if (value === null && offer) {
          result.clientMaxWindowBits = true;
        } else if (value === null || !WINDOW_BITS.test(value)) {
          return `parameter ${name} must be 8 to 15, received ${
            value ?? "none"
          }`;
        } else result.clientMaxWindowBits = Number(value);
        break;
      default:
        // RFC 7692 7.1: an unknown parameter makes the offer or response invalid.
        return `unknown parameter ${name}`;
    }
  }
  return result;
}

/** Formats parameters as a permessage-deflate extension value. */
export function formatDeflate(params: DeflateParams): string {
  const list: [string, string | null][] = [];
  if (params.serverNoContextTakeover) {
    list.push(["server_no_context_takeover", null]);
  }
  if (params.clientNoContextTakeover) {
    list.push(["client_no_context_takeover", null]);
  }
  if (params.serverMaxWindowBits !== undefined) {
    list.push(["server_max_window_bits", String(params.serverMaxWindowBits)]);
  }
  if (params.clientMaxWindowBits === true) {
    list.push(["client_max_window_bits", null]);
  } else if (params.clientMaxWindowBits !== undefined) {
    list.push(["client_max_window_bits", String(params.clientMaxWindowBits)]);
  }
  return formatExtension({ name: PERMESSAGE_DEFLATE, params: list });
}

/** What a server agreed to: the response header value and the parameters. */
export interface DeflateAgreement {
  /** The `Sec-WebSocket-Extensions` value to answer with. */
  response: string;
  /** The parameters in force for this connection. */
  params: DeflateParams;
}

/**
 * The server's choice among a client's offers (RFC 7692 7.1): the first
 * permessage-deflate offer it can accept. Offers with an unknown or
 * duplicate parameter or a bad value are declined, as is one without
 * `client_max_window_bits` when `config` limits the client's window; a
 * malformed header declines them all.
 *
 * @param header the request's `Sec-WebSocket-Extensions`, `null` if absent
 * @param config the server's settings
 * @returns the agreement, or `null` when nothing was accepted
 */
export function negotiateDeflate(
  header: string | null,
  config: CompressionConfig,
): DeflateAgreement | null {
  if (header === null) return null;
  const extensions = parseExtensions(header);
  if (extensions === null) return null;
  for (const extension of extensions) {
    if (extension.name !== PERMESSAGE_DEFLATE) continue;
    const offer = deflateParams(extension.params, true);
    if (typeof offer === "string") continue;
    // RFC 7692 7.1.2.2: without the parameter in the offer, the client may
    // not support limiting its window, so a server that needs the limit
    // declines the offer.
    if (
      config.clientMaxWindowBits !== undefined &&
      offer.clientMaxWindowBits === undefined
    ) continue;
    const params: DeflateParams = {
      // RFC 7692 7.1.1.1: a server that accepts the parameter includes it.
      serverNoContextTakeover: offer.serverNoContextTakeover ||
        config.serverNoContextTakeover,
      // RFC 7692 7.1.1.2: the server may ask for it whether offered or not.
      clientNoContextTakeover: offer.clientNoContextTakeover ||
        config.clientNoContextTakeover,
      // RFC 7692 7.1.2.1: accepted with the same or a smaller value. When
      // not offered, the server's smaller window needs no announcement: any
      // decompressor reads a stream made with a smaller window.
      serverMaxWindowBits: offer.serverMaxWindowBits === undefined
        ? undefined
        : Math.min(
          offer.serverMaxWindowBits,
          config.serverMaxWindowBits ?? 15,
        ),
      // RFC 7692 7.1.2.2: only when offered; a value the client gave is
      // the limit it chose, the server may lower it.
      clientMaxWindowBits: offer.clientMaxWindowBits === undefined
        ? undefined
        : config.clientMaxWindowBits !== undefined
        ? Math.min(
          config.clientMaxWindowBits,
          offer.clientMaxWindowBits === true ? 15 : offer.clientMaxWindowBits,
        )
        : offer.clientMaxWindowBits === true
        ? undefined
        : offer.clientMaxWindowBits,
    };
    return { response: formatDeflate(params), params };
  }
  return null;
}

/**
 * The client's offer (RFC 7692 7.1): one permessage-deflate with what
 * `config` asks of the server, and `client_max_window_bits` (with the
 * client's limit, or without a value to say it accepts one).
 */
export function deflateOffer(config: CompressionConfig): string {
  return formatDeflate({
    serverNoContextTakeover: config.serverNoContextTakeover,
    clientNoContextTakeover: config.clientNoContextTakeover,
    serverMaxWindowBits: config.serverMaxWindowBits,
    clientMaxWindowBits: config.clientMaxWindowBits ?? true,
  });
}

/**
 * Checks a server's `Sec-WebSocket-Extensions` response against the offer
 * of {@linkcode deflateOffer} (RFC 7692 7.1).
 *
 * @returns the parameters in force, or why the response must fail the
 *   connection: malformed, an extension that was not offered, more than
 *   one, an invalid parameter, or one outside what the client allowed
 */
export function acceptDeflate(
  header: string,
  config: CompressionConfig,
): DeflateParams | string {
  const extensions = parseExtensions(header);
  if (extensions === null) return `malformed extensions ${header}`;
  if (extensions.length === 0) return `empty extensions ${header}`;
  if (extensions.length > 1 || extensions[0].name !== PERMESSAGE_DEFLATE) {
    return `extensions ${header}, which were not offered`;
  }
  const params = deflateParams(extensions[0].params, false);
  if (typeof params === "string") {
    return `invalid permessage-deflate response: ${params}`;
  }
  // RFC 7692 7.1.1.1: asked for, the server must agree to it.
  if (config.serverNoContextTakeover && !params.serverNoContextTakeover) {
    return "the server did not accept server_no_context_takeover";
  }
  // RFC 7692 7.1.2.1: the server's window is at most what was asked.
  if (config.serverMaxWindowBits !== undefined) {
    if (params.serverMaxWindowBits === undefined) {
      return "the server did not accept server_max_window_bits";
    }
    if (params.serverMaxWindowBits > config.serverMaxWindowBits) {
      return `server_max_window_bits=${params.serverMaxWindowBits} is over the ${config.serverMaxWindowBits} offered`;
    }
  }
  // RFC 7692 7.1.2.2: a client window limit is at most the client's own.
  if (
    typeof params.clientMaxWindowBits === "number" &&
    config.clientMaxWindowBits !== undefined &&
    params.clientMaxWindowBits > config.clientMaxWindowBits
  ) {
    return `client_max_window_bits=${params.clientMaxWindowBits} is over the ${config.clientMaxWindowBits} offered`;
  }
  return params;
}
