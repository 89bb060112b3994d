/**
 * The WebSocket protocol state machine (RFC 6455 5-7), sans I/O: bytes go
 * in, messages to deliver and frames to send come out through a
 * {@linkcode ProtocolSink}. It decides; the socket acts.
 *
 * @module
 */

import { copyBytes, joinBytes } from "./buffers.ts";
import {
  ABNORMAL_CLOSURE,
  decodeClosePayload,
  encodeClosePayload,
  INTERNAL_ERROR,
  INVALID_FRAME_PAYLOAD_DATA,
} from "./close.ts";
import {
  FrameError,
  OPCODE_BINARY,
  OPCODE_CLOSE,
  OPCODE_CONTINUATION,
  OPCODE_PING,
  OPCODE_PONG,
  OPCODE_TEXT,
} from "./frame.ts";
import { FrameDecoder } from "./frame_decoder.ts";
import { decodeUtf8, Utf8StreamDecoder } from "./utf8.ts";
import type { PerMessageDeflate } from "./deflate_codec.ts";

/** A text message. */
export interface TextMessage {
  /** Discriminant. */
  type: "text";
  /** The text, validated UTF-8. */
  data: string;
}
/** A binary message. */
export interface BinaryMessage {
  /** Discriminant. */
  type: "binary";
  /** The bytes; the message owns them. */
  data: Uint8Array;
}
/** A ping or pong control frame (pings are answered automatically). */
export interface ControlMessage {
  /** Discriminant. */
  type: "ping" | "pong";
  /** The application data, 125 bytes or less. */
  data: Uint8Array;
}
/**
 * The end of the connection: the peer's close frame, the code this side
 * failed the connection with, or 1006 when it dropped without a close frame.
 */
export interface CloseMessage {
  /** Discriminant. */
  type: "close";
  /** The close code: 1005 when the close frame carried none, 1006 when there was no close frame. */
  code: number;
  /** The close reason, `""` when none. */
  reason: string;
}
/** What `Socket.read()` returns: a whole message, discriminated on `type`. */
export type Message =
  | TextMessage
  | BinaryMessage
  | ControlMessage
  | CloseMessage;

/** How a connection ended. */
export interface CloseInfo {
  /** The close code: the peer's, the one this side failed with, or 1006. */
  code: number;
  /** The reason that goes with `code`, `""` when none. */
  reason: string;
  /** Whether close frames went both ways before TCP closed. */
  wasClean: boolean;
}

/** Where the protocol's decisions go. */
export interface ProtocolSink {
  /** A message for the application; `size` is its payload in bytes. */
  deliver(message: Message, size: number): void;
  /** A control frame to send now (a pong, a close). */
  sendControl(opcode: number, payload: Uint8Array): void;
  /**
   * The close handshake is over (`failed` false): close TCP once our close
   * frame is out. Or the connection failed (`failed` true): send our close
   * frame, then discard input until the peer closes TCP or a timeout, so
   * the peer's unread bytes do not turn our close into a reset
   * (RFC 6455 7.1.1: "discarding any trailing bytes").
   */
  closeTransport(failed: boolean): void;
}

/**
 * Where the pieces of a streamed data message go (see
 * {@linkcode Protocol.streamTo}), in order: `start`, any number of `data`,
 * then `end`, or `abort` when the connection ends first.
 */
export interface StreamSink {
  /** A data message starts. */
  start(type: "text" | "binary"): void;
  /**
   * A piece of it: decoded text, or bytes: a view of the chunk given to
   * `receive()` (`scratch` false), or of memory reused at once (`scratch`
   * true, inflated bytes).
   */
  data(piece: Uint8Array | string, scratch: boolean): void;
  /** The message is complete. */
  end(): void;
  /** The connection failed or closed before the message was complete. */
  abort(): void;
}

/** Limits for {@linkcode Protocol}. */
export interface ProtocolOptions {
  /** `true` for a client (frames it receives are unmasked). */
  client: boolean;
  maxMessageSize: number;
  maxFrameSize: number;
  /** Largest streamed message (see {@linkcode Protocol.streamTo}). */
  maxStreamedMessageSize?: number;
  /** Largest frame of a streamed message. */
  maxStreamedFrameSize?: number;
  /** The negotiated permessage-deflate codec, `null` or absent when none. */
  deflate?: PerMessageDeflate | null;
}

const EMPTY = new Uint8Array(0);

/** Encodes a close reason cut to at most `limit` UTF-8 bytes, whole characters. */
export function truncateReason(reason: string, limit = 123): string {
  const encoder = new TextEncoder();
  if (encoder.encode(reason).length <= limit) return reason;
  let cut = reason;
  while (encoder.encode(cut).length > limit - 3) cut = cut.slice(0, -1);
  return cut + "...";
}

/**
 * Where a connection is in its life (RFC 6455 4, 7), numbered as the web's
 * `WebSocket.readyState`. A {@linkcode Protocol} starts `OPEN` (the
 * handshake is over when it is made); sending or receiving a close frame
 * makes it `CLOSING`; both close frames exchanged, a failure, or the end
 * of the transport make it `CLOSED`.
 */
export const State = {
  /** The opening handshake is under way. */
  CONNECTING: 0,
  /** Data messages go both ways. */
  OPEN: 1,
  /** One close frame went one way; the other is awaited. */
  CLOSING: 2,
  /** The close handshake is over, or the connection failed or dropped. */
  CLOSED: 3,
} as const;

/** One of the values of {@linkcode State}. */
export type State = typeof State[keyof typeof State];

/**
 * One connection's protocol state: frame decoding, message assembly, UTF-8
 * validation, automatic pongs and the close handshake.
 */
export class Protocol {
  #sink: ProtocolSink;
  #decoder: FrameDecoder;

  // The fragmented data message in progress.
  #messageOpcode = 0;
  #text: Utf8StreamDecoder | null = null;
  #parts: Uint8Array[] = [];
  #partsSize = 0;
  // permessage-deflate: the codec, and whether the message in progress is
  // compressed.
  #deflate: PerMessageDeflate | null;
  #compressed = false;
  // Payload bytes of the text frame still arriving that were taken in
  // (validated, or inflated and validated) before the frame was whole.
  #frameTaken = 0;
  // Where inflated bytes go: made with the codec, not for every connection.
  #onInflated: ((chunk: Uint8Array) => boolean) | null = null;

  // Streamed delivery: where pieces go, the message in progress (text:
  // its decoder), and the bound on its inflated size.
  #streamSink: StreamSink | null = null;
  #streaming = false;
  #streamText: TextDecoder | null = null;
  #maxStreamed: number;
  #onStreamInflated: ((chunk: Uint8Array) => boolean) | null = null;

  #state: State = State.OPEN;
  #closeCode: number = ABNORMAL_CLOSURE;
  #closeReason = "";
  #wasClean = false;

  constructor(sink: ProtocolSink, options: ProtocolOptions) {
    this.#sink = sink;
    this.#deflate = options.deflate ?? null;
    this.#maxStreamed = options.maxStreamedMessageSize ??
      options.maxMessageSize;
    this.#decoder = new FrameDecoder({
      requireMask: !options.client,
      maxFrameSize: options.maxFrameSize,
      maxMessageSize: options.maxMessageSize,
      maxStreamedMessageSize: this.#maxStreamed,
      maxStreamedFrameSize: options.maxStreamedFrameSize ?? this.#maxStreamed,
      // RFC 7692 6: RSV1 marks a compressed message, once negotiated.
      allowRsv1: this.#deflate !== null,
      // Fragments of a binary message land in one buffer, uncopied.
      assembleBinary: true,
      // Small binary and control payloads are unmasked as they are copied
      // out of the read buffer.
      copySmall: true,
    });
  }

  /** Where the connection is: see {@linkcode State}. */
  get state(): State {
    return this.#state;
  }

  /** Whether the connection still accepts data frames to send (`OPEN`). */
  get open(): boolean {
    return this.#state === State.OPEN;
  }

  /**
   * A close frame was sent (`CLOSING`), or nothing more will be (`CLOSED`).
   */
  get closeSent(): boolean {
    return this.#state >= State.CLOSING;
  }

  /**
   * A close frame was received, or the connection failed or dropped
   * (`CLOSED`): nothing more is read.
   */
  get closeReceived(): boolean {
    return this.#state === State.CLOSED;
  }

  /** How the connection ended, once it has (1006 until then). */
  get closeCode(): number {
    return this.#closeCode;
  }

  /** The reason that goes with {@linkcode closeCode}. */
  get closeReason(): string {
    return this.#closeReason;
  }

  /** Whether both close frames were exchanged. */
  get wasClean(): boolean {
    return this.#wasClean;
  }

  /**
   * Data messages that start from now on are delivered in pieces to
   * `sink`, as their frames arrive, bounded by `maxStreamedMessageSize`;
   * `null` goes back to whole messages. A message in progress keeps the
   * way it started.
   */
  streamTo(sink: StreamSink | null): void {
    if (sink !== null) this.#streamSink = sink;
    this.#decoder.streamMessages = sink !== null;
  }

  /** Whether a streamed message is in progress. */
  get streaming(): boolean {
    return this.#streaming;
  }

  /** Processes bytes from the peer. */
  receive(chunk: Uint8Array): void {
    if (this.#state === State.CLOSED) return;
    const decoder = this.#decoder;
    decoder.feed(chunk);
    try {
      while (decoder.next()) {
        this.#onFrame(decoder);
        if (this.closeReceived) break;
      }
      if (!this.closeReceived) this.#takePartial(decoder);
    } catch (error) {
      this.#onError(error);
    }
    decoder.release();
  }

  /** See {@linkcode FrameDecoder.directTarget}. */
  directTarget(minimum: number): Uint8Array | null {
    return this.#state === State.CLOSED
      ? null
      : this.#decoder.directTarget(minimum);
  }

  /** Processes `n` bytes read into the {@linkcode directTarget}. */
  advance(n: number): void {
    this.#decoder.advance(n);
    this.receive(EMPTY);
  }

  /**
   * Nothing is read any more: frees a partial frame's buffer now (see
   * {@linkcode FrameDecoder.dispose}).
   */
  releaseInput(): void {
    this.#decoder.dispose();
  }

  /**
   * The transport ended (EOF, reset, timeout) before a close frame arrived:
   * deliver a 1006 close message with `reason`.
   */
  receiveEnd(reason = ""): void {
    if (this.#state === State.CLOSED) return;
    this.#state = State.CLOSED;
    this.#closeCode = ABNORMAL_CLOSURE;
    this.#closeReason = reason;
    this.#wasClean = false;
    if (this.#streaming) this.#abortStream();
    this.#sink.deliver({ type: "close", code: ABNORMAL_CLOSURE, reason }, 0);
  }

  /**
   * Starts the close handshake from this side. The caller validated `code`
   * and `reason`. Does nothing if a close frame was already sent.
   */
  close(code: number, reason: string): void {
    if (this.#state !== State.OPEN) return;
    this.#state = State.CLOSING;
    this.#sink.sendControl(OPCODE_CLOSE, encodeClosePayload(code, reason));
  }

  /**
   * Fails the connection (RFC 6455 7.1.7): send a close frame with `code`,
   * deliver it as the close message, close TCP. The one place a peer's
   * error becomes a close code.
   */
  failConnection(code: number, reason: string): void {
    if (this.#state === State.CLOSED) return;
    const open = this.#state === State.OPEN;
    this.#state = State.CLOSED;
    this.#closeCode = code;
    this.#closeReason = reason;
    this.#wasClean = false;
    if (this.#streaming) this.#abortStream();
    if (open) {
      this.#sink.sendControl(
        OPCODE_CLOSE,
        encodeClosePayload(code, truncateReason(reason)),
      );
    }
    this.#sink.deliver({ type: "close", code, reason }, 0);
    this.#sink.closeTransport(true);
  }

  #onError(error: unknown): void {
    if (error instanceof FrameError) {
      this.failConnection(error.closeCode, error.message);
    } else {
      // Nothing else should throw; if it does, the peer still gets a
      // well-formed close rather than the process an exception.
      this.failConnection(INTERNAL_ERROR, "Internal error");
    }
  }

  /**
   * Takes in what came of a text frame still arriving: RFC 6455 8.1 has
   * the connection fail as soon as the bytes prove the text invalid, and a
   * frame can be large and slow.
   */
  #takePartial(decoder: FrameDecoder): void {
    const opcode = decoder.opcode;
    let compressed: boolean;
    if (opcode === OPCODE_TEXT) compressed = decoder.rsv1;
    else if (
      opcode === OPCODE_CONTINUATION && this.#messageOpcode === OPCODE_TEXT
    ) compressed = this.#compressed;
    else return;
    const received = decoder.partialPayload();
    if (received === null || received.length === this.#frameTaken) return;
    const piece = received.subarray(this.#frameTaken);
    this.#frameTaken = received.length;
    if (opcode === OPCODE_TEXT) {
      // The message starts before its first frame is whole.
      this.#messageOpcode = OPCODE_TEXT;
      this.#compressed = compressed;
    }
    if (compressed) this.#deflate!.inflate(piece, false, this.#inflated());
    else this.#addFragment(piece, false);
  }

  #inflated(): (chunk: Uint8Array) => boolean {
    if (this.#onInflated === null) {
      // Through a constant: V8 allocates a function literal assigned
      // straight to a property in the old generation, where it kept this
      // connection's objects alive until a full collection.
      const onInflated = (chunk: Uint8Array) => {
        this.#addFragment(chunk, false);
        return this.#state !== State.CLOSED;
      };
      this.#onInflated = onInflated;
    }
    return this.#onInflated;
  }

  #onFrame(decoder: FrameDecoder): void {
    const opcode = decoder.opcode;
    if (opcode < 0x8 && decoder.streaming) return this.#onPiece(decoder);
    let payload = decoder.payload;
    const taken = this.#frameTaken;
    if (taken > 0 && opcode < 0x8) {
      // The frame's first bytes went in while it arrived.
      payload = payload.subarray(taken);
      this.#frameTaken = 0;
    }
    switch (opcode) {
      case OPCODE_TEXT:
      case OPCODE_BINARY:
        if (decoder.rsv1) {
          // RFC 7692 6.1: RSV1 on the first frame: the message is compressed.
          this.#messageOpcode = opcode;
          this.#compressed = true;
          this.#inflate(payload, decoder.fin);
        } else if (decoder.fin && taken === 0) {
          this.#deliverWhole(opcode, payload, decoder.payloadOwned);
        } else if (decoder.fin) {
          this.#addFragment(payload, false);
          this.#endFragmented();
        } else {
          this.#messageOpcode = opcode;
          this.#addFragment(payload, decoder.assembled);
        }
        return;
      case OPCODE_CONTINUATION:
        if (this.#compressed) {
          this.#inflate(payload, decoder.fin);
          return;
        }
        this.#addFragment(payload, decoder.assembled);
        if (decoder.fin) this.#endFragmented(decoder.message);
        return;
      case OPCODE_PING: {
        const data = decoder.payloadOwned ? payload : copyBytes(payload);
        // RFC 6455 5.5.2: a ping is answered with a pong carrying the same
        // application data, unless a close frame was already sent.
        if (this.#state === State.OPEN) {
          this.#sink.sendControl(OPCODE_PONG, data);
        }
        this.#sink.deliver({ type: "ping", data }, data.length);
        return;
      }
      case OPCODE_PONG:
        this.#sink.deliver(
          {
            type: "pong",
            data: decoder.payloadOwned ? payload : copyBytes(payload),
          },
          payload.length,
        );
        return;
      case OPCODE_CLOSE:
        this.#onClose(payload);
        return;
    }
  }

  // -- Streamed messages --

  /** A piece of a frame of a streamed message. */
  #onPiece(decoder: FrameDecoder): void {
    const sink = this.#streamSink!;
    if (!this.#streaming) {
      // The message's first piece: a text or binary frame.
      const text = decoder.opcode === OPCODE_TEXT;
      this.#streaming = true;
      this.#messageOpcode = decoder.opcode;
      // RFC 7692 6.1: RSV1 on the first frame: the message is compressed.
      this.#compressed = decoder.rsv1;
      this.#streamText = text
        ? new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })
        : null;
      sink.start(text ? "text" : "binary");
    }
    const last = decoder.fin && !decoder.partial;
    if (this.#compressed) {
      if (this.#onStreamInflated === null) {
        // Through a constant: see #inflated.
        const onInflated = (chunk: Uint8Array) => {
          this.#streamPiece(chunk, true);
          return this.#state !== State.CLOSED;
        };
        this.#onStreamInflated = onInflated;
      }
      this.#deflate!.inflate(
        decoder.payload,
        last,
        this.#onStreamInflated,
        this.#maxStreamed,
      );
    } else this.#streamPiece(decoder.payload, false);
    if (!last || this.#state === State.CLOSED) return;
    const text = this.#streamText;
    if (text !== null) {
      let rest: string;
      try {
        // A character cut off at the end of the message is invalid.
        rest = text.decode();
      } catch {
        return this.failConnection(
          INVALID_FRAME_PAYLOAD_DATA,
          "Invalid text message: not valid UTF-8",
        );
      }
      if (rest.length > 0) sink.data(rest, false);
    }
    this.#streaming = false;
    this.#streamText = null;
    this.#compressed = false;
    this.#messageOpcode = 0;
    sink.end();
  }

  #streamPiece(bytes: Uint8Array, scratch: boolean): void {
    if (bytes.length === 0 || this.#state === State.CLOSED) return;
    const text = this.#streamText;
    if (text === null) return this.#streamSink!.data(bytes, scratch);
    let piece: string;
    try {
      // RFC 6455 8.1: fail as soon as the bytes prove the text invalid; a
      // character split between pieces is decoded once, whole.
      piece = text.decode(bytes, { stream: true });
    } catch {
      return this.failConnection(
        INVALID_FRAME_PAYLOAD_DATA,
        "Invalid text message: not valid UTF-8",
      );
    }
    if (piece.length > 0) this.#streamSink!.data(piece, false);
  }

  #abortStream(): void {
    this.#streaming = false;
    this.#streamText = null;
    this.#streamSink!.abort();
  }

  #deliverWhole(opcode: number, payload: Uint8Array, owned: boolean): void {
    if (opcode === OPCODE_TEXT) {
      const data = decodeUtf8(payload);
      if (data === undefined) {
        return this.failConnection(
          INVALID_FRAME_PAYLOAD_DATA,
          "Invalid text message: not valid UTF-8",
        );
      }
      this.#sink.deliver({ type: "text", data }, payload.length);
    } else {
      const data = owned ? payload : copyBytes(payload);
      this.#sink.deliver({ type: "binary", data }, data.length);
    }
  }

  /**
   * Inflates a frame of a compressed message into its fragments. Throws
   * {@linkcode FrameError} (1009, 1007) for what the peer got wrong.
   */
  #inflate(payload: Uint8Array, fin: boolean): void {
    if (fin) this.#compressed = false;
    this.#deflate!.inflate(payload, fin, this.#inflated());
    if (fin) this.#endFragmented();
  }

  /**
   * Adds a fragment of the message in progress: text goes to the UTF-8
   * stream decoder; binary is already in the decoder's message buffer
   * (`assembled`), or is inflated output, which is copied.
   */
  #addFragment(payload: Uint8Array, assembled: boolean): void {
    if (this.#messageOpcode === OPCODE_TEXT) {
      this.#text ??= new Utf8StreamDecoder();
      // RFC 6455 8.1: fail as soon as the bytes prove the text invalid.
      if (!this.#text.push(payload)) {
        return this.failConnection(
          INVALID_FRAME_PAYLOAD_DATA,
          "Invalid text message: not valid UTF-8",
        );
      }
      this.#partsSize += payload.length;
    } else if (assembled) {
      this.#partsSize += payload.length;
    } else if (payload.length > 0) {
      this.#parts.push(copyBytes(payload));
      this.#partsSize += payload.length;
    }
  }

  /** Delivers the message in progress; `whole`: the decoder assembled it. */
  #endFragmented(whole: Uint8Array | null = null): void {
    if (this.#state === State.CLOSED) return;
    const size = this.#partsSize;
    if (this.#messageOpcode === OPCODE_TEXT) {
      // A compressed message that inflated to nothing had no fragment.
      const data = this.#text === null ? "" : this.#text.end();
      this.#text = null;
      if (data === undefined) {
        return this.failConnection(
          INVALID_FRAME_PAYLOAD_DATA,
          "Invalid text message: not valid UTF-8",
        );
      }
      this.#sink.deliver({ type: "text", data }, size);
    } else {
      const parts = this.#parts;
      let data: Uint8Array;
      if (whole !== null) {
        data = whole;
      } else if (parts.length === 1) {
        data = parts[0];
      } else {
        data = joinBytes(parts, size);
      }
      this.#parts = [];
      this.#sink.deliver({ type: "binary", data }, size);
    }
    this.#messageOpcode = 0;
    this.#partsSize = 0;
  }

  #onClose(payload: Uint8Array): void {
    const close = decodeClosePayload(payload);
    if (!close.ok) return this.failConnection(close.closeCode, close.message);
    const open = this.#state === State.OPEN;
    this.#state = State.CLOSED;
    this.#closeCode = close.code;
    this.#closeReason = close.reason;
    this.#wasClean = true;
    // A close frame between the fragments: the message stays incomplete.
    if (this.#streaming) this.#abortStream();
    if (open) {
      // RFC 6455 5.5.1: reply with a close frame, typically echoing the code.
      this.#sink.sendControl(OPCODE_CLOSE, encodeClosePayload(close.code, ""));
    }
    this.#sink.deliver({
      type: "close",
      code: close.code,
      reason: close.reason,
    }, 0);
    this.#sink.closeTransport(false);
  }
}
