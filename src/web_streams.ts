/**
 * A socket as the web's `WebSocketStream` shows one: `readable`, the data
 * messages, and `writable`, where strings go as text and bytes as binary.
 * Built on the socket's public `read`, `send` and `close`.
 *
 * @module
 */

import { INTERNAL_ERROR } from "./close.ts";
import type { Message } from "./protocol.ts";

/** The part of a `Socket` the streams use. */
export interface StreamSocket {
  read(): Promise<Message | null>;
  send(data: string | Uint8Array): Promise<void>;
  close(code?: number, reason?: string): Promise<void>;
}

// Each socket's streams, made when first asked for.
const readables = new WeakMap<
  StreamSocket,
  ReadableStream<string | Uint8Array>
>();
const writables = new WeakMap<
  StreamSocket,
  WritableStream<string | Uint8Array>
>();

/**
 * The data messages of `sock`, pulled one at a time with `read()` (so the
 * socket's read backpressure holds); ends after the close message.
 * Cancelling it closes the socket. The same stream every time.
 */
export function readableOf(
  sock: StreamSocket,
): ReadableStream<string | Uint8Array> {
  let readable = readables.get(sock);
  if (readable === undefined) {
    readable = makeReadable(sock);
    readables.set(sock, readable);
  }
  return readable;
}

/**
 * Where data messages go: a string as text, bytes as binary, each write
 * resolving as `send` does (the backpressure). Closing it closes the
 * socket with 1000; aborting it, with 1011. The same stream every time.
 */
export function writableOf(
  sock: StreamSocket,
): WritableStream<string | Uint8Array> {
  let writable = writables.get(sock);
  if (writable === undefined) {
    writable = makeWritable(sock);
    writables.set(sock, writable);
  }
  return writable;
}

function makeReadable(
  sock: StreamSocket,
): ReadableStream<string | Uint8Array> {
  return new ReadableStream<string | Uint8Array>({
    async pull(controller) {
      for (;;) {
        const message = await sock.read();
        if (message === null || message.type === "close") {
          controller.close();
          return;
        }
        if (message.type === "text" || message.type === "binary") {
          controller.enqueue(message.data);
          return;
        }
      }
    },
    async cancel() {
      await sock.close().catch(() => {});
    },
  }, { highWaterMark: 0 });
}

function makeWritable(
  sock: StreamSocket,
): WritableStream<string | Uint8Array> {
  return new WritableStream<string | Uint8Array>({
    write(chunk) {
      return sock.send(chunk);
    },
    close() {
      return sock.close();
    },
    async abort() {
      await sock.close(INTERNAL_ERROR, "Stream aborted").catch(() => {});
    },
  }, { highWaterMark: 1 });
}
