/**
 * A socket's sending side: `write` and its checks, compression, and
 * messages sent in pieces. The socket keeps the connection; this queues
 * frames on its {@linkcode WriteQueue}.
 *
 * @module
 */

import { ABNORMAL_CLOSURE, closeArguments, INTERNAL_ERROR } from "./close.ts";
import type { PerMessageDeflate } from "./deflate_codec.ts";
import { WebSocketError } from "./errors.ts";
import { OPCODE_BINARY, OPCODE_PING } from "./frame.ts";
import type { SocketLimits } from "./options.ts";
import { type MessageType, OPCODES, payloadOf } from "./outgoing.ts";
import type { Protocol } from "./protocol.ts";
import {
  DataLane,
  isStreamSource,
  streamOpcode,
  type StreamSource,
  writeStream,
} from "./stream_writer.ts";
import type { WriteQueue } from "./write_queue.ts";

function noop(): void {}

/** A rejected promise that does not kill the process when nobody awaits it. */
export function closedError(
  message: string,
  closeCode?: number,
): Promise<never> {
  const promise = Promise.reject(
    new WebSocketError("SOCKET_CLOSED", message, { closeCode }),
  );
  // Network-caused: must not kill the process if the caller did not await.
  promise.catch(noop);
  return promise;
}

/** A write's error once the connection was lost to `cause`. */
export function connectionLost(cause: unknown): WebSocketError {
  return new WebSocketError(
    "SOCKET_CLOSED",
    `Cannot write: the connection was lost: ${
      cause instanceof Error ? cause.message : String(cause)
    }`,
    { closeCode: ABNORMAL_CLOSURE, cause },
  );
}

/** A write's error once the connection is closed (with `closeCode`). */
export function connectionClosed(closeCode: number): WebSocketError {
  return new WebSocketError(
    "SOCKET_CLOSED",
    "Cannot write: the connection is closed",
    { closeCode },
  );
}

/** What a {@linkcode Sender} needs of its socket. */
export interface SenderInit {
  protocol: Protocol;
  writes: WriteQueue;
  limits: SocketLimits;
  deflate: PerMessageDeflate | null;
  /** The socket, as the sender needs it. */
  owner: SenderOwner;
}

/** What a {@linkcode Sender} asks of its socket. */
export interface SenderOwner {
  /** The socket's `closed`. */
  readonly closed: Promise<unknown>;
  /** Drops the connection (the peer does not read), with a reason. */
  drop(reason: string): void;
}

/** The sending side of one socket (see the module doc). */
export class Sender {
  /** Set by the socket once its connection is closed. */
  transportClosed = false;
  #protocol: Protocol;
  #writes: WriteQueue;
  #limits: SocketLimits;
  #deflate: PerMessageDeflate | null;
  #owner: SenderOwner;
  // Strings this short (times 3, the most UTF-8 bytes per UTF-16 unit) are
  // sure to fit one frame and the write buffer.
  #smallTextLimit: number;
  // Made by the first write of a stream: data writes wait behind it.
  #lane: DataLane | null = null;

  constructor(init: SenderInit) {
    this.#protocol = init.protocol;
    this.#writes = init.writes;
    this.#limits = init.limits;
    this.#deflate = init.deflate;
    this.#owner = init.owner;
    // With compression, only strings sure to stay under its threshold take
    // the uncompressed fast path.
    this.#smallTextLimit = Math.min(
      init.limits.fragmentSize,
      16 * 1024,
      init.deflate === null ? Infinity : init.deflate.threshold - 1,
    );
  }

  /** `Socket.write`. */
  write(
    data: string | Uint8Array | null | undefined | StreamSource,
    type: MessageType,
  ): Promise<void> {
    const lane = this.#lane;
    if (lane !== null && lane.busy && (type === "text" || type === "binary")) {
      // A message is going out in pieces: this one waits its turn.
      return lane.behind(() => this.#write(data, type));
    }
    return this.#write(data, type);
  }

  #write(
    data: string | Uint8Array | null | undefined | StreamSource,
    type: MessageType,
  ): Promise<void> {
    if (type === "close") {
      return this.#writeClose(data as string | Uint8Array | null);
    }
    const opcode = OPCODES[type];
    if (
      typeof data === "string" && opcode <= OPCODE_BINARY &&
      data.length * 3 <= this.#smallTextLimit
    ) {
      // Short strings are encoded straight into the write buffer.
      return this.#refusal(data.length) ??
        this.#queued(this.#writes.pushString(opcode, data));
    }
    if (!(data instanceof Uint8Array) && isStreamSource(data)) {
      // Before payloadOf, which would make (and throw away) a TypeError
      // with its stack for every streamed message.
      return this.#writeStream(data, type);
    }
    const payload = payloadOf(data, type, opcode);
    if (!(payload instanceof Uint8Array)) return Promise.reject(payload);
    const refusal = this.#refusal(payload.length);
    if (refusal !== null) return refusal;
    if (
      this.#deflate !== null && opcode <= OPCODE_BINARY &&
      payload.length >= this.#deflate.threshold
    ) return this.#writeCompressed(opcode, payload);
    if (opcode >= OPCODE_PING) {
      return this.#queued(this.#writes.push(true, false, opcode, payload));
    }
    return this.#queued(
      this.#writes.pushMessage(
        opcode,
        payload,
        false,
        this.#limits.fragmentSize,
      ),
    );
  }

  /** What a write returns once its frames were pushed (or not). */
  #queued(ok: boolean): Promise<void> {
    return ok
      ? this.#writes.ready()
      : closedError("Cannot write: the connection is closed");
  }

  /**
   * Compresses a data message (RFC 7692 7.2.1) and queues it, as several
   * frames past `fragmentSize`, with RSV1 on the first only (RFC 7692 6).
   */
  #writeCompressed(opcode: number, payload: Uint8Array): Promise<void> {
    let compressed: Uint8Array | null;
    try {
      compressed = this.#deflate!.compress(payload);
    } catch {
      // zlib failed on our own data: the compressor's state is unknown.
      this.#protocol.failConnection(INTERNAL_ERROR, "Compression failed");
      return this.#writeAfterClose();
    }
    return this.#queued(
      this.#writes.pushMessage(
        opcode,
        compressed ?? payload,
        compressed !== null,
        this.#limits.fragmentSize,
      ),
    );
  }

  /** Sends a stream as one message, after the data writes queued before. */
  #writeStream(source: StreamSource, type: MessageType): Promise<void> {
    const opcode = streamOpcode(type);
    if (opcode === undefined) {
      return Promise.reject(
        new TypeError(
          `Cannot write a stream: type must be text or binary, received ${type}`,
        ),
      );
    }
    const send = () =>
      writeStream(
        {
          writes: this.#writes,
          fragmentSize: this.#limits.fragmentSize,
          deflate: this.#deflate,
          refusal: (size) => this.#refusal(size),
          accepts: (size) => this.#accepts(size),
          failed: (what) =>
            what === "source"
              ? this.#protocol.close(INTERNAL_ERROR, "Stream source failed")
              : this.#protocol.failConnection(
                INTERNAL_ERROR,
                "Compression failed",
              ),
        },
        source,
        opcode,
      );
    return (this.#lane ??= new DataLane()).behind(send);
  }

  #writeClose(data: string | Uint8Array | null | undefined): Promise<void> {
    const close = closeArguments(data);
    if (close instanceof RangeError) return Promise.reject(close);
    this.#protocol.close(close.code, close.reason);
    return this.#owner.closed.then(noop);
  }

  /**
   * Why a data write of `size` bytes cannot be queued (the close handshake
   * began, or the buffer would go past `maxBufferedAmount`), or `null`.
   */
  #refusal(size: number): Promise<never> | null {
    if (this.#accepts(size)) return null;
    if (!this.#protocol.open || this.transportClosed) {
      return this.#writeAfterClose();
    }
    return this.#overflow(this.#writes.bufferedAmount + size);
  }

  /** Whether `#refusal(size)` is `null`, found without its effects. */
  #accepts(size: number): boolean {
    if (!this.#protocol.open || this.transportClosed) return false;
    const buffered = this.#writes.bufferedAmount;
    return buffered === 0 || buffered + size <= this.#limits.maxBufferedAmount;
  }

  /** The peer stopped reading: drop it rather than buffer without bound. */
  #overflow(size: number): Promise<never> {
    this.#owner.drop(
      `Send buffer over maxBufferedAmount (${this.#limits.maxBufferedAmount} bytes): the peer is not reading`,
    );
    return closedError(
      `Cannot write: ${size} bytes would be buffered, over maxBufferedAmount (${this.#limits.maxBufferedAmount} bytes)`,
      1006,
    );
  }

  #writeAfterClose(): Promise<never> {
    const p = this.#protocol;
    return closedError(
      p.closeReceived
        ? "Cannot write: the connection is closed"
        : "Cannot write: the close handshake has begun",
      p.closeReceived ? p.closeCode : undefined,
    );
  }
}
