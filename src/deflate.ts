/**
 * permessage-deflate (RFC 7692): the negotiation of its parameters in the
 * `Sec-WebSocket-Extensions` header (pure), and the per-connection
 * compressor and decompressor.
 *
 * The codec runs on `node:zlib`'s raw deflate, driven synchronously: one
 * zlib stream per direction (or one shared by every connection when the
 * context is not taken over), written with `Z_SYNC_FLUSH` so each message
 * ends on a byte boundary. The stream objects' own synchronous API
 * (`_processChunk`, `inflateRawSync`) closes the stream after one call, so
 * the codec talks to the stream's handle as that API does, keeping it
 * open. Inflating is synchronous, so a compressed message keeps its place
 * among the control frames around it, and inflating stops as soon as the
 * message passes `maxMessageSize`.
 *
 * @module
 */

import zlib from "node:zlib";
import { INVALID_FRAME_PAYLOAD_DATA, MESSAGE_TOO_BIG } from "./close.ts";
import { FrameError } from "./frame.ts";

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
  threshold: number;
  level: number;
  serverNoContextTakeover: boolean;
  clientNoContextTakeover: boolean;
  serverMaxWindowBits: number | undefined;
  clientMaxWindowBits: number | undefined;
}

/** The default {@linkcode CompressionOptions.threshold}. */
export const DEFAULT_THRESHOLD = 1024;
/** The default {@linkcode CompressionOptions.level}. */
export const DEFAULT_LEVEL = 1;

/**
 * Checks the `compression` option and applies its defaults.
 *
 * @returns the settings, or `null` when compression is off (`false`,
 *   `undefined`, or a runtime whose `node:zlib` cannot be driven
 *   synchronously)
 * @throws {TypeError} a field is invalid (the message names it)
 */
export function compressionConfig(value: unknown): CompressionConfig | null {
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
  if (!zlibUsable()) return null;
  return {
    threshold,
    level,
    serverNoContextTakeover: options.serverNoContextTakeover ?? false,
    clientNoContextTakeover: options.clientNoContextTakeover ?? false,
    serverMaxWindowBits: options.serverMaxWindowBits,
    clientMaxWindowBits: options.clientMaxWindowBits,
  };
}

// -- Sec-WebSocket-Extensions (RFC 6455 9.1) --

/** One extension of a `Sec-WebSocket-Extensions` header, with its parameters in order. */
export interface Extension {
  /** The extension token, lower-cased. */
  name: string;
  /** `[name, value]` pairs; names lower-cased, `null` for a parameter without a value. */
  params: [string, string | null][];
}

const TOKEN_CHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;

/**
 * Parses a `Sec-WebSocket-Extensions` value (RFC 6455 9.1):
 * `name; param; param=value, name2; param="quoted"`.
 *
 * @returns the extensions in order, or `null` when the value is malformed
 */
export function parseExtensions(value: string): Extension[] | null {
  const extensions: Extension[] = [];
  let pos = 0;
  const skipSpace = () => {
    while (value[pos] === " " || value[pos] === "\t") pos++;
  };
  const token = (): string => {
    const start = pos;
    while (pos < value.length && TOKEN_CHAR.test(value[pos])) pos++;
    return value.slice(start, pos);
  };
  for (;;) {
    skipSpace();
    // RFC 9110 5.6.1: empty list elements are ignored.
    if (value[pos] === ",") {
      pos++;
      continue;
    }
    if (pos >= value.length) break;
    const name = token().toLowerCase();
    if (name === "") return null;
    const params: [string, string | null][] = [];
    skipSpace();
    while (value[pos] === ";") {
      pos++;
      skipSpace();
      const param = token().toLowerCase();
      if (param === "") return null;
      skipSpace();
      let paramValue: string | null = null;
      if (value[pos] === "=") {
        pos++;
        skipSpace();
        if (value[pos] === '"') {
          pos++;
          paramValue = "";
          for (;;) {
            if (pos >= value.length) return null;
            const char = value[pos++];
            if (char === '"') break;
            paramValue += char === "\\" ? value[pos++] ?? "" : char;
          }
          // RFC 6455 9.1: a quoted value must be a token once unquoted.
          if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(paramValue)) return null;
        } else {
          paramValue = token();
          if (paramValue === "") return null;
        }
        skipSpace();
      }
      params.push([param, paramValue]);
    }
    extensions.push({ name, params });
    if (pos >= value.length) break;
    if (value[pos] !== ",") return null;
  }
  return extensions;
}

/** Formats one extension for a `Sec-WebSocket-Extensions` header. */
export function formatExtension(extension: Extension): string {
  let text = extension.name;
  for (const [name, value] of extension.params) {
    text += value === null ? `; ${name}` : `; ${name}=${value}`;
  }
  return text;
}

// -- Negotiation (RFC 7692 7.1) --

/** The permessage-deflate parameters of one offer or response. */
export interface DeflateParams {
  serverNoContextTakeover: boolean;
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

// -- The codec (RFC 7692 7.2) --

/** The part of a node:zlib stream's handle that the codec drives. */
interface ZlibHandle {
  writeSync(
    flush: number,
    input: Uint8Array,
    inputOffset: number,
    inputLength: number,
    output: Uint8Array,
    outputOffset: number,
    outputLength: number,
  ): void;
  reset(): void;
  close(): void;
  onerror: (message: string, errno: number) => void;
}

/** What `zlib.createDeflateRaw()` and `createInflateRaw()` hold. */
interface ZlibStreamInternals {
  _handle?: ZlibHandle;
  _writeState?: Uint32Array;
}

const Z_SYNC_FLUSH = zlib.constants.Z_SYNC_FLUSH;
/** RFC 7692 7.2.1: the end of a sync flush, removed on send, appended on receive. */
const TAIL = new Uint8Array([0x00, 0x00, 0xff, 0xff]);
/** RFC 7692 7.2.3.6: an empty message, compressed. */
const EMPTY_BLOCK = new Uint8Array([0x00]);
/** Output goes here first (one buffer for all: the codec is synchronous). */
const SCRATCH_SIZE = 64 * 1024;
let scratch: Uint8Array | null = null;

/**
 * One raw deflate or inflate stream, driven synchronously through its
 * handle, as node:zlib's own `_processChunk` does, without closing it.
 */
class ZlibStream {
  readonly key: string;
  /** Input bytes the last {@linkcode write} did not consume. */
  availableIn = 0;
  #handle: ZlibHandle;
  #state: Uint32Array;
  #error: string | null = null;

  constructor(key: string, deflate: boolean, windowBits: number, level = 0) {
    this.key = key;
    // The stream's own 16 KiB output buffer is never used; chunkSize keeps
    // it small.
    const stream =
      (deflate
        ? zlib.createDeflateRaw({ windowBits, level, chunkSize: 64 })
        : zlib.createInflateRaw({
          windowBits,
          chunkSize: 64,
        })) as unknown as ZlibStreamInternals;
    this.#handle = stream._handle!;
    this.#state = stream._writeState!;
    // zlib reports errors here, synchronously; the stream's own handler
    // would destroy it and emit an error event.
    this.#handle.onerror = (message) => this.#error = message;
  }

  /**
   * One zlib call with `Z_SYNC_FLUSH`.
   *
   * @returns how many bytes were written to `output`
   * @throws {Error} zlib's error (corrupt input)
   */
  write(
    input: Uint8Array,
    inputOffset: number,
    inputLength: number,
    output: Uint8Array,
    outputLength: number,
  ): number {
    this.#handle.writeSync(
      Z_SYNC_FLUSH,
      input,
      inputOffset,
      inputLength,
      output,
      0,
      outputLength,
    );
    if (this.#error !== null) {
      const message = this.#error;
      this.#error = null;
      throw new Error(message);
    }
    this.availableIn = this.#state[1];
    return outputLength - this.#state[0];
  }

  /** Forgets the context: the next message starts a new stream. */
  reset(): void {
    this.#handle.reset();
    this.#error = null;
  }

  close(): void {
    try {
      this.#handle.close();
    } catch {
      // Already closed.
    }
  }
}

// Streams without context takeover hold nothing between messages, so all
// connections with the same settings share them.
const POOL_LIMIT = 16;
const pool = new Map<string, ZlibStream[]>();

function acquire(deflate: boolean, windowBits: number, level: number) {
  const key = `${deflate ? "d" : "i"}${windowBits}:${level}`;
  return pool.get(key)?.pop() ??
    new ZlibStream(key, deflate, windowBits, level);
}

function release(stream: ZlibStream): void {
  let idle = pool.get(stream.key);
  if (idle === undefined) pool.set(stream.key, idle = []);
  if (idle.length >= POOL_LIMIT) return stream.close();
  stream.reset();
  idle.push(stream);
}

let usable: boolean | undefined;

/**
 * Whether node:zlib can be driven synchronously here (its handle has
 * `writeSync`): checked once, with a round trip.
 */
export function zlibUsable(): boolean {
  if (usable !== undefined) return usable;
  try {
    const deflater = new ZlibStream("", true, 15, 1);
    const inflater = new ZlibStream("", false, 15);
    const text = new TextEncoder().encode("permessage-deflate ".repeat(4));
    const out = new Uint8Array(256);
    const compressed = out.slice(
      0,
      deflater.write(text, 0, text.length, out, 256),
    );
    const length = inflater.write(compressed, 0, compressed.length, out, 256);
    usable = length === text.length && compressed.length < text.length &&
      compressed.subarray(-4).join() === TAIL.join();
    deflater.close();
    inflater.close();
  } catch {
    usable = false;
  }
  return usable;
}

/** What {@linkcode PerMessageDeflate} needs to know about its connection. */
export interface PerMessageDeflateInit {
  /** Which side this is. */
  client: boolean;
  /** What the handshake agreed on. */
  params: DeflateParams;
  /** This side's settings (threshold, level). */
  config: CompressionConfig;
  /** Largest inflated message, in bytes. */
  maxMessageSize: number;
}

/**
 * The compressor and decompressor of one connection (RFC 7692 7.2). zlib
 * state is made on first use, and shared between connections for a
 * direction without context takeover. Synchronous; {@linkcode close} when
 * the connection is over.
 */
export class PerMessageDeflate {
  /** Data messages shorter than this are sent uncompressed. */
  readonly threshold: number;

  #level: number;
  #deflateBits: number;
  #deflateReset: boolean;
  #inflateBits: number;
  #inflateReset: boolean;
  #maxMessageSize: number;
  #deflater: ZlibStream | null = null;
  #inflater: ZlibStream | null = null;
  // The message being inflated: its inflated size, and how many of its
  // compressed bytes zlib took.
  #messageSize = 0;
  #messageInput = 0;
  #closed = false;
  // RFC 7692 7.2.3.4: a peer may end its DEFLATE stream with a final block
  // (BFINAL) at the end of a message; zlib then stops, and the next bytes
  // start a new stream that, with context takeover, still refers to the
  // old window. Raw inflate here cannot keep a window across streams nor
  // take one as a dictionary (Deno's node:zlib ignores `dictionary` for
  // raw streams), so the codec keeps the last window of output itself and
  // replays it into the new stream as stored blocks. It records output
  // during the first message of a stream, and from then on only for a
  // peer that has ended a stream: a peer that never does costs nothing
  // after its first message.
  #history: Uint8Array | null = null;
  #historyAt = 0;
  #historyLength = 0;
  // Whether #history holds the current stream's whole window.
  #historyValid = true;
  #streamMessages = 0;
  #peerEndsStreams = false;
  #messageRestarts = 0;

  constructor(init: PerMessageDeflateInit) {
    const { client, params, config } = init;
    this.threshold = config.threshold;
    this.#level = config.level;
    // zlib cannot make a raw stream with an 8-bit window and uses 9 for
    // it. Its longest match distance with 9 bits is 250 bytes (the window
    // less MIN_LOOKAHEAD), inside what a peer's 256-byte window holds.
    const bits = (value: number | true | undefined, own?: number) =>
      Math.max(
        9,
        Math.min(typeof value === "number" ? value : 15, own ?? 15),
      );
    if (client) {
      this.#deflateBits = bits(
        params.clientMaxWindowBits,
        config.clientMaxWindowBits,
      );
      this.#deflateReset = params.clientNoContextTakeover ||
        config.clientNoContextTakeover;
      this.#inflateBits = bits(params.serverMaxWindowBits);
      this.#inflateReset = params.serverNoContextTakeover;
    } else {
      this.#deflateBits = bits(
        params.serverMaxWindowBits,
        config.serverMaxWindowBits,
      );
      this.#deflateReset = params.serverNoContextTakeover;
      this.#inflateBits = bits(params.clientMaxWindowBits);
      this.#inflateReset = params.clientNoContextTakeover;
    }
    this.#maxMessageSize = init.maxMessageSize;
  }

  /**
   * Compresses one whole message (RFC 7692 7.2.1).
   *
   * @returns the payload to send with RSV1 set, or `null` to send the
   *   message uncompressed (it did not shrink, and without context
   *   takeover the peer's state does not depend on it)
   */
  compress(payload: Uint8Array): Uint8Array | null {
    if (this.#closed) throw new Error("Compressor closed");
    const stream = this.#deflater ??
      acquire(true, this.#deflateBits, this.#level);
    this.#deflater = stream;
    const buffer = scratch ??= new Uint8Array(SCRATCH_SIZE);
    const parts: Uint8Array[] = [];
    let total = 0;
    let offset = 0;
    let remaining = payload.length;
    try {
      for (;;) {
        const n = stream.write(
          payload,
          offset,
          remaining,
          buffer,
          SCRATCH_SIZE,
        );
        offset += remaining - stream.availableIn;
        remaining = stream.availableIn;
        if (n > 0) {
          parts.push(buffer.slice(0, n));
          total += n;
        }
        if (n < SCRATCH_SIZE) break;
      }
    } finally {
      if (this.#deflateReset) {
        release(stream);
        this.#deflater = null;
      }
    }
    // RFC 7692 7.2.1: remove the 0x00 0x00 0xff 0xff that ends the flush.
    const length = total - 4;
    if (length <= 0) return EMPTY_BLOCK;
    if (this.#deflateReset && length >= payload.length) return null;
    if (parts.length === 1) return parts[0].subarray(0, length);
    const out = new Uint8Array(total);
    let at = 0;
    for (const part of parts) {
      out.set(part, at);
      at += part.length;
    }
    return out.subarray(0, length);
  }

  /**
   * Inflates one frame of a compressed message, handing the output to
   * `sink` in pieces (views valid during the call only) as it comes. On
   * the last frame, appends RFC 7692 7.2.2's 0x00 0x00 0xff 0xff.
   *
   * @param payload the frame's payload
   * @param fin whether it is the message's last frame
   * @param sink takes each piece; returning `false` stops inflating
   * @throws {FrameError} 1009 as soon as the message passes
   *   `maxMessageSize`; 1007 for data zlib cannot inflate
   */
  inflate(
    payload: Uint8Array,
    fin: boolean,
    sink: (chunk: Uint8Array) => boolean,
  ): void {
    if (this.#closed) throw new Error("Decompressor closed");
    try {
      if (payload.length > 0 && !this.#run(payload, sink, false)) return;
      // An empty compressed message is the single byte 0x00 (RFC 7692
      // 7.2.3.6); a peer that sends no byte at all means the same, and the
      // tail alone would leave zlib inside a block.
      if (fin && this.#messageInput > 0) this.#run(TAIL, sink, true);
    } catch (error) {
      this.#endMessage();
      if (error instanceof FrameError) throw error;
      throw new FrameError(
        INVALID_FRAME_PAYLOAD_DATA,
        `Invalid compressed data: ${
          error instanceof Error ? error.message : String(error)
        }`,
      );
    }
    if (fin) this.#endMessage();
  }

  /** Frees the zlib state. The codec must not be used afterwards. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#deflater?.close();
    this.#inflater?.close();
    this.#deflater = this.#inflater = null;
  }

  #endMessage(): void {
    this.#messageSize = 0;
    this.#messageInput = 0;
    this.#messageRestarts = 0;
    this.#streamMessages++;
    if (!this.#peerEndsStreams && this.#history !== null) {
      // Past its first message without a final block: stop recording.
      this.#history = null;
      this.#historyValid = false;
    }
    if (this.#inflateReset && this.#inflater !== null) {
      release(this.#inflater);
      this.#inflater = null;
    }
  }

  /** @returns `false` when `sink` asked to stop */
  #run(
    input: Uint8Array,
    sink: (chunk: Uint8Array) => boolean,
    tail: boolean,
  ): boolean {
    const stream = this.#inflater ??= acquire(false, this.#inflateBits, 0);
    const buffer = scratch ??= new Uint8Array(SCRATCH_SIZE);
    const record = !this.#inflateReset &&
      (this.#streamMessages === 0 || this.#peerEndsStreams);
    let offset = 0;
    let remaining = input.length;
    for (;;) {
      // Ask for one byte over the limit at most: the message fails as soon
      // as that byte exists, and no more is inflated.
      const room = Math.min(
        SCRATCH_SIZE,
        this.#maxMessageSize - this.#messageSize + 1,
      );
      const n = stream.write(input, offset, remaining, buffer, room);
      const consumed = remaining - stream.availableIn;
      offset += consumed;
      remaining = stream.availableIn;
      this.#messageInput += consumed;
      if (n > 0) {
        this.#messageSize += n;
        if (this.#messageSize > this.#maxMessageSize) {
          throw new FrameError(
            MESSAGE_TOO_BIG,
            `Message too big: limit is ${this.#maxMessageSize} bytes, inflated to more`,
          );
        }
        if (record) this.#record(buffer.subarray(0, n));
        if (!sink(buffer.subarray(0, n))) return false;
      }
      if (n === room) continue;
      if (remaining === 0) return true;
      // Room left and input left: the peer ended the DEFLATE stream with a
      // final block (RFC 7692 7.2.3.4). What follows starts a new stream:
      // the empty stored block of the example's last byte and our tail, or
      // the next message. One per message: a peer cannot make us replay
      // the window for every few bytes it sends.
      if (this.#messageRestarts > 0) {
        throw new Error("more than one final block in a message");
      }
      this.#messageRestarts++;
      this.#restart(stream);
      // Only (part of) our 0x00 0x00 0xff 0xff is left: it would just
      // open an empty block of the new stream.
      if (tail) return true;
    }
  }

  /** Starts a new stream after a final block, with the window if kept. */
  #restart(stream: ZlibStream): void {
    stream.reset();
    this.#streamMessages = 0;
    if (this.#inflateReset) return;
    const window = this.#historyValid ? this.#window() : null;
    this.#peerEndsStreams = true;
    this.#historyValid = true;
    if (window === null) {
      // The window was not kept: the new stream starts empty, and a
      // reference into the old one fails as invalid data (1007), never as
      // wrong bytes.
      this.#history = null;
      this.#historyLength = this.#historyAt = 0;
      return;
    }
    if (window.length === 0) return;
    // A stored block (RFC 1951 3.2.4), not final, whose output (the old
    // window) is dropped: the new stream's window is the old one.
    const length = window.length;
    const block = new Uint8Array(5 + length);
    block[1] = length & 0xff;
    block[2] = length >>> 8;
    block[3] = ~length & 0xff;
    block[4] = (~length >>> 8) & 0xff;
    block.set(window, 5);
    const buffer = scratch ??= new Uint8Array(SCRATCH_SIZE);
    stream.write(block, 0, block.length, buffer, SCRATCH_SIZE);
  }

  /** Keeps the last window of output (see #history). */
  #record(chunk: Uint8Array): void {
    const size = 1 << this.#inflateBits;
    const ring = this.#history ??= new Uint8Array(size);
    const length = chunk.length;
    if (length >= size) {
      ring.set(chunk.subarray(length - size));
      this.#historyAt = 0;
      this.#historyLength = size;
      return;
    }
    const at = this.#historyAt;
    const first = Math.min(length, size - at);
    ring.set(chunk.subarray(0, first), at);
    if (first < length) ring.set(chunk.subarray(first), 0);
    this.#historyAt = (at + length) % size;
    this.#historyLength = Math.min(size, this.#historyLength + length);
  }

  /** The kept window, oldest byte first. */
  #window(): Uint8Array {
    const ring = this.#history;
    if (ring === null) return new Uint8Array(0);
    if (this.#historyLength < ring.length) {
      return ring.slice(0, this.#historyLength);
    }
    const at = this.#historyAt;
    const window = new Uint8Array(ring.length);
    window.set(ring.subarray(at));
    window.set(ring.subarray(0, at), ring.length - at);
    return window;
  }
}
