/**
 * node:zlib's raw deflate and inflate, driven synchronously: one stream
 * object per direction, written with `Z_SYNC_FLUSH` so each message ends on
 * a byte boundary. The stream objects' own synchronous API
 * (`_processChunk`, `inflateRawSync`) closes the stream after one call, so
 * {@linkcode ZlibStream} talks to the stream's handle as that API does,
 * keeping it open. Streams without context takeover are pooled and shared
 * by every connection with the same settings.
 *
 * @module
 */

import type * as Zlib from "node:zlib";

/** `process.getBuiltinModule`, which Deno has as Node does. */
interface BuiltinModules {
  getBuiltinModule(id: string): unknown;
}

let zlibModule: typeof Zlib | null = null;

/**
 * node:zlib, loaded the first time a stream is made. Compression is off
 * unless asked for, and loading node:zlib at import cost every process
 * about 5.7 MiB of RSS (34.2 to 39.9 MiB for an empty script), whether or
 * not a connection ever compressed.
 */
function zlib(): typeof Zlib {
  return zlibModule ??= (globalThis as unknown as { process: BuiltinModules })
    .process.getBuiltinModule("node:zlib") as typeof Zlib;
}

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

// zlib.h's value, the same everywhere (node:zlib's constants.Z_SYNC_FLUSH).
const Z_SYNC_FLUSH = 2;
/**
 * The four bytes (0x00 0x00 0xff 0xff) that end every `Z_SYNC_FLUSH`: the
 * empty stored block that RFC 7692 7.2.1 removes on send and 7.2.2
 * appends on receive.
 */
export const SYNC_FLUSH_END: Uint8Array = new Uint8Array([0, 0, 0xff, 0xff]);

/**
 * One raw deflate or inflate stream, driven synchronously through its
 * handle, as node:zlib's own `_processChunk` does, without closing it.
 */
export class ZlibStream {
  /** The settings it was made with, as the pool files it. */
  readonly key: string;
  /** Input bytes the last {@linkcode write} did not consume. */
  availableIn = 0;
  #handle: ZlibHandle;
  #state: Uint32Array;
  #error: string | null = null;

  /**
   * A new stream: a compressor (`deflate` true) at `level`, or a
   * decompressor, with a window of 2^`windowBits` bytes.
   */
  constructor(key: string, deflate: boolean, windowBits: number, level = 0) {
    this.key = key;
    // The stream's own 16 KiB output buffer is never used; chunkSize keeps
    // it small.
    const stream =
      (deflate
        ? zlib().createDeflateRaw({ windowBits, level, chunkSize: 64 })
        : zlib().createInflateRaw({
          windowBits,
          chunkSize: 64,
        })) as unknown as ZlibStreamInternals;
    this.#handle = stream._handle!;
    this.#state = stream._writeState!;
    // zlib reports errors here, synchronously; the stream's own handler
    // would destroy it and emit an error event. Through a constant: V8
    // allocates a function literal assigned straight to a property in the
    // old generation, where it kept this compressor (and its connection)
    // alive until a full collection.
    const onError = (message: string) => this.#error = message;
    this.#handle.onerror = onError;
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

  /** Frees zlib's memory; the stream must not be used afterwards. */
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

/**
 * An idle stream with these settings from the pool, or a new one.
 *
 * @param deflate `true` for a compressor, `false` for a decompressor
 */
export function acquireStream(
  deflate: boolean,
  windowBits: number,
  level: number,
): ZlibStream {
  const key = `${deflate ? "d" : "i"}${windowBits}:${level}`;
  return pool.get(key)?.pop() ??
    new ZlibStream(key, deflate, windowBits, level);
}

/** Resets a stream and keeps it for {@linkcode acquireStream}, or closes it. */
export function releaseStream(stream: ZlibStream): void {
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
      compressed.subarray(-4).join() === SYNC_FLUSH_END.join();
    deflater.close();
    inflater.close();
  } catch {
    usable = false;
  }
  return usable;
}
