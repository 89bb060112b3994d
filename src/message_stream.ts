/**
 * Messages in pieces, the receiving side: what `Socket.readStream()`
 * returns, and {@linkcode Inbound}, the {@linkcode StreamSink} that turns
 * the protocol's pieces into one `ReadableStream` per message, with
 * backpressure: the socket stops reading while the stream's consumer does
 * not pull. A binary message written with `write(stream)` is read around
 * its stream: see {@linkcode directSource}.
 *
 * @module
 */

import { MESSAGE_TOO_BIG } from "./close.ts";
import { WebSocketError } from "./errors.ts";
import type { SocketLimits } from "./options.ts";
import type {
  CloseMessage,
  ControlMessage,
  Message,
  Protocol,
  StreamSink,
} from "./protocol.ts";
import type { ReadQueue } from "./read_queue.ts";
import { giveWriteBuffer, joinBytes, takeWriteBuffer } from "./buffers.ts";

/** Read size while a message streams. */
const STREAM_READ = 256 * 1024;
/** Read size while a compressed message streams. */
const INFLATE_READ = 4096;

/** A text message whose text comes in pieces, as its frames arrive. */
export interface TextStreamMessage {
  /** Discriminant. */
  type: "text";
  /**
   * The text, validated and decoded piece by piece (a character split
   * between frames comes whole, in one piece).
   */
  stream: ReadableStream<string>;
}

/** A binary message whose bytes come in pieces, as its frames arrive. */
export interface BinaryStreamMessage {
  /** Discriminant. */
  type: "binary";
  /**
   * The bytes: a byte stream, so `getReader({ mode: "byob" })` reads them
   * into buffers of your own.
   */
  stream: ReadableStream<Uint8Array>;
}

/**
 * What `Socket.readStream()` returns: a data message as a stream, or a
 * ping, pong or close message as `read()` returns it.
 */
export type StreamedMessage =
  | TextStreamMessage
  | BinaryStreamMessage
  | ControlMessage
  | CloseMessage;

/**
 * Takes the pieces of a streamed message that came, in place: views of the
 * socket's read buffer, valid only during the call (copy what you keep),
 * and whether the last of them ends the message. Returns `false` to leave
 * them all for the next call to {@linkcode DirectSource.pieces}.
 */
export type PieceTaker = (pieces: Uint8Array[], ends: boolean) => boolean;

/**
 * A `readStream()` binary message as `write(stream)` reads it: its pieces
 * straight from the read buffer, with no copy into a reader's buffer and
 * no stream machinery per piece.
 */
export interface DirectSource {
  /**
   * Hands what came since the last call to `take`, at once or as soon as
   * it comes: resolves `true` when something was handed (or left), `false`
   * once the message ended; rejects if it was cut short.
   */
  pieces(take: PieceTaker): Promise<boolean>;
  /** Drops the rest of the message. */
  cancel(): Promise<void>;
}

/**
 * The byte stream of a `readStream()` binary message, which knows its
 * message: `write(stream)` reads it directly, without a reader. While it
 * does, the stream is locked as a reader would lock it: `locked` is true
 * and what would take a reader throws (or rejects) a `TypeError`; a read
 * that gets past that (from inside the runtime) errors the stream.
 */
class MessageBytes extends ReadableStream<Uint8Array> {
  #message: InboundStream | null;

  constructor(source: UnderlyingByteSource, message: InboundStream) {
    // Nothing is read ahead but the views held: pull means a read.
    super(source as UnderlyingSource<Uint8Array>, { highWaterMark: 0 });
    this.#message = message;
  }

  /** The message behind `stream`, if it is one of these. */
  static messageOf(stream: ReadableStream): InboundStream | null {
    return #message in stream ? (stream as MessageBytes).#message : null;
  }

  /**
   * Its message was written directly and is over: let it go. Deno keeps
   * every stream's objects until a full collection (see
   * bench/stream_gc.ts), and the message is not to be among them.
   */
  static forget(stream: ReadableStream): void {
    if (#message in stream) (stream as MessageBytes).#message = null;
  }

  /** Throws what taking a reader throws while `write()` sends the stream. */
  #refuseWhileWritten(): void {
    if (this.#message?.writing === true) {
      throw new TypeError("The stream is locked: write() is sending it");
    }
  }

  override get locked(): boolean {
    return this.#message?.writing === true || super.locked;
  }

  override getReader(
    options: { mode: "byob" },
  ): ReadableStreamBYOBReader;
  override getReader(): ReadableStreamDefaultReader<Uint8Array>;
  override getReader(
    options?: ReadableStreamGetReaderOptions,
  ): ReadableStreamReader<Uint8Array>;
  override getReader(
    options?: ReadableStreamGetReaderOptions,
  ): ReadableStreamReader<Uint8Array> {
    this.#refuseWhileWritten();
    return super.getReader(options);
  }

  override async cancel(reason?: unknown): Promise<void> {
    this.#refuseWhileWritten();
    return await super.cancel(reason);
  }

  override async pipeTo(
    destination: WritableStream<Uint8Array>,
    options?: StreamPipeOptions,
  ): Promise<void> {
    this.#refuseWhileWritten();
    return await super.pipeTo(destination, options);
  }

  override pipeThrough<T>(
    transform: {
      writable: WritableStream<Uint8Array>;
      readable: ReadableStream<T>;
    },
    options?: StreamPipeOptions,
  ): ReadableStream<T> {
    this.#refuseWhileWritten();
    return super.pipeThrough(transform, options);
  }

  override tee(): [
    ReadableStream<Uint8Array>,
    ReadableStream<Uint8Array>,
  ] {
    this.#refuseWhileWritten();
    return super.tee();
  }

  override values(
    options?: ReadableStreamIteratorOptions,
  ): AsyncIterableIterator<Uint8Array> {
    this.#refuseWhileWritten();
    return super.values(options);
  }

  override [Symbol.asyncIterator](
    options?: ReadableStreamIteratorOptions,
  ): AsyncIterableIterator<Uint8Array> {
    return this.values(options);
  }
}

/**
 * The message behind `stream` when it is an unread `readStream()` binary
 * message: from now on `write()` sends it, and it is locked until the end
 * (see {@linkcode MessageBytes}); returns it as a {@linkcode DirectSource},
 * or `null` (any other stream, or one already read or locked).
 */
export function directSource(stream: ReadableStream): DirectSource | null {
  const message = MessageBytes.messageOf(stream);
  if (message === null || stream.locked || !message.fresh) return null;
  return message.direct();
}

/**
 * One streamed message being received. Bytes go straight into a waiting
 * BYOB read's buffer, or to the waiting taker of a {@linkcode DirectSource}
 * (`write(stream)`, which copies them into its write queue); otherwise they
 * stay where they were read, held as views of the socket's read buffer
 * (the socket reads nothing more until they were taken), and go to the
 * next read, copied once: no allocation per piece for a BYOB reader, one
 * (the chunk it gets) for a default one.
 */
class InboundStream {
  readonly stream: ReadableStream<Uint8Array> | ReadableStream<string>;
  #bytes: ReadableByteStreamController | null = null;
  #text: ReadableStreamDefaultController<string> | null = null;
  #cancelled = false;
  #done = false;
  // The consumer asked for more (pull) and got nothing since.
  #wanted = false;
  // Views of the read buffer not taken yet, and whether the message ended
  // behind them.
  #held: Uint8Array[] = [];
  #closeAfterHeld = false;
  #wake: (() => void) | null = null;
  // Read directly (see DirectSource), without a reader: the taker waiting
  // for pieces, and how the message ended.
  #direct = false;
  #taker: PieceTaker | null = null;
  #taken: PromiseWithResolvers<boolean> | null = null;
  #closed = false;
  #failure: Error | null = null;
  // Nothing was read from the stream yet.
  fresh = true;

  constructor(text: boolean, highWaterMark: number) {
    const pull = () => {
      if (this.#direct) {
        // A read from inside the runtime, past MessageBytes's lock: write()
        // takes the bytes, and this read gets an error, not some of them.
        this.#bytes!.error(
          new TypeError("The stream is locked: write() is sending it"),
        );
        this.#bytes = null;
        return;
      }
      this.fresh = false;
      this.#wanted = true;
      this.serve();
      this.#resume();
    };
    const cancel = () => {
      // The rest of the message is read and dropped.
      this.fresh = false;
      this.#cancelled = true;
      this.#held = [];
      this.#resume();
    };
    this.stream = text
      ? new ReadableStream<string>({
        start: (controller) => void (this.#text = controller),
        pull,
        cancel,
      }, { highWaterMark, size: (piece) => piece.length })
      : new MessageBytes({
        type: "bytes",
        start: (controller) => void (this.#bytes = controller),
        pull,
        cancel,
      }, this);
  }

  /** Reads this message directly from now on (see {@linkcode directSource}). */
  direct(): DirectSource {
    this.fresh = false;
    this.#direct = true;
    return {
      pieces: (take) => this.#pieces(take),
      // MessageBytes's own cancel() refuses while write() sends it.
      cancel: () => ReadableStream.prototype.cancel.call(this.stream),
    };
  }

  /** `write()` sends this message and has not finished. */
  get writing(): boolean {
    return this.#direct && !this.#closed && this.#failure === null;
  }

  #pieces(take: PieceTaker): Promise<boolean> {
    if (this.#failure !== null) return Promise.reject(this.#failure);
    if (this.#closed) return Promise.resolve(false);
    const taken = this.#taken = Promise.withResolvers<boolean>();
    this.#taker = take;
    this.#wanted = true;
    this.serve();
    this.#resume();
    return taken.promise;
  }

  /** The consumer is behind: the socket should stop reading. */
  get blocked(): boolean {
    if (this.#cancelled) return false;
    if (this.#held.length > 0) return true;
    if (this.#done) return false;
    if (this.#direct) return !this.#wanted;
    const size = (this.#bytes ?? this.#text)!.desiredSize;
    return !this.#wanted && size !== null && size <= 0;
  }

  /** Views of the read buffer are held: it must not be read into. */
  get holding(): boolean {
    return this.#held.length > 0;
  }

  /** Resolves when the consumer pulls (or cancels). */
  pulled(): Promise<void> {
    if (!this.blocked) return Promise.resolve();
    return new Promise((resolve) => this.#wake = resolve);
  }

  /**
   * A piece: a string, or bytes that are a view of the read buffer
   * (`scratch` false: may be held until the socket reads again) or of
   * scratch memory (copied at once).
   */
  data(piece: Uint8Array | string, scratch: boolean): void {
    if (this.#cancelled) return;
    if (typeof piece === "string") {
      this.#wanted = false;
      return this.#text!.enqueue(piece);
    }
    // Held until the chunk was processed (see serve()); scratch memory is
    // copied now, to keep its place.
    this.#held.push(scratch ? piece.slice() : piece);
  }

  /**
   * Hands what is held to the reads that wait: as much as fits into a BYOB
   * read's buffer, or all of it, in one chunk, to a default read. Returns
   * whether views are still held.
   */
  serve(): boolean {
    if (this.#direct) return this.#serveDirect();
    const held = this.#held;
    const controller = this.#bytes;
    while (held.length > 0 && controller !== null && !this.#cancelled) {
      const request = controller.byobRequest;
      if (request !== null) {
        const view = request.view!;
        const target = new Uint8Array(
          view.buffer,
          view.byteOffset,
          view.byteLength,
        );
        let n = 0;
        while (held.length > 0 && n < target.length) {
          const first = held[0];
          const k = Math.min(first.length, target.length - n);
          target.set(k === first.length ? first : first.subarray(0, k), n);
          n += k;
          if (k === first.length) held.shift();
          else held[0] = first.subarray(k);
        }
        this.#wanted = false;
        request.respond(n);
      } else if (this.#wanted) {
        this.#wanted = false;
        controller.enqueue(joinBytes(held.splice(0)));
      } else break;
    }
    if (held.length === 0 && this.#closeAfterHeld) this.#close();
    return held.length > 0;
  }

  /**
   * Hands what is held to the taker waiting, if any (kept for its next
   * call if it leaves them). Returns whether views are still held.
   */
  #serveDirect(): boolean {
    const held = this.#held;
    const take = this.#taker;
    if (take !== null && held.length > 0 && !this.#cancelled) {
      const taken = this.#taken!;
      this.#taker = this.#taken = null;
      this.#wanted = false;
      if (take(held, this.#closeAfterHeld)) held.length = 0;
      taken.resolve(true);
    }
    if (held.length === 0 && this.#closeAfterHeld) this.#close();
    return held.length > 0;
  }

  /** Copies what is held: the read buffer is about to be read into. */
  release(): void {
    if (this.#direct) {
      // For the taker's next call.
      this.#held = this.#held.map((view) => view.slice());
      return;
    }
    const controller = this.#bytes!;
    for (const view of this.#held) controller.enqueue(view.slice());
    this.#held = [];
    if (this.#closeAfterHeld) this.#close();
  }

  end(): void {
    this.#done = true;
    if (this.#cancelled) return;
    if (this.#held.length > 0) this.#closeAfterHeld = true;
    else this.#close();
  }

  abort(error: Error): void {
    this.#done = true;
    this.#held = [];
    // No controller once a read past the lock errored the stream.
    if (!this.#cancelled) (this.#bytes ?? this.#text)?.error(error);
    this.#failure = error;
    const taken = this.#taken;
    this.#taker = this.#taken = null;
    taken?.reject(error);
    this.#resume();
  }

  #close(): void {
    this.#closeAfterHeld = false;
    this.#closed = true;
    const taken = this.#taken;
    this.#taker = this.#taken = null;
    taken?.resolve(false);
    this.#bytes?.close();
    this.#text?.close();
    // A BYOB read still waiting ends with `done`.
    this.#bytes?.byobRequest?.respond(0);
    // Written directly, and over: unlocked, as pipeTo leaves its source.
    if (this.#direct) MessageBytes.forget(this.stream);
  }

  #resume(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}

/** How a socket's {@linkcode Inbound} reaches the socket. */
export interface InboundInit {
  /** The socket's read queue. */
  queue: ReadQueue<Message | StreamedMessage>;
  /** The socket's protocol: its close code, and failing the connection. */
  protocol: Protocol;
  limits: SocketLimits;
  /** The socket's `read()`: what follows a gathered message cut short. */
  read(): Promise<Message | null>;
}

/**
 * A socket's streamed messages: the protocol's {@linkcode StreamSink}, and
 * the conversions between whole and streamed messages for `read()` and
 * `readStream()`.
 */
export class Inbound implements StreamSink {
  #init: InboundInit;
  #current: InboundStream | null = null;
  // Streams holding views of the read buffer (see InboundStream).
  #holders: InboundStream[] = [];
  #buffer: Uint8Array | null = null;

  constructor(init: InboundInit) {
    this.#init = init;
  }

  /** A streamed message is in progress and its consumer is behind. */
  get blocked(): boolean {
    return this.#current !== null && this.#current.blocked;
  }

  /** Resolves when reading may go on (see {@linkcode blocked}). */
  pulled(): Promise<void> {
    return this.#current === null ? Promise.resolve() : this.#current.pulled();
  }

  /**
   * After a chunk was processed: hands what the streams hold to the reads
   * that wait, and returns whether some stream still holds views of the
   * read buffer: the socket must then wait until they were taken
   * ({@linkcode taken}), or {@linkcode release} them, before it reads
   * into that buffer again.
   */
  serve(): boolean {
    const holders = this.#holders;
    while (holders.length > 0 && !holders[0].serve()) holders.shift();
    return holders.length > 0;
  }

  /** Resolves when the first holder's consumer pulled (or cancelled). */
  taken(): Promise<void> {
    return this.#holders.length === 0
      ? Promise.resolve()
      : this.#holders[0].pulled();
  }

  /** Copies whatever views are still held. */
  release(): void {
    for (const holder of this.#holders) holder.release();
    this.#holders = [];
  }

  /**
   * Where the socket reads while a message streams: a buffer of its own,
   * bigger than a pooled read buffer, taken from the write buffer pool;
   * small while a compressed message streams, to bound what one read may
   * inflate to before backpressure is checked again. `null` when no
   * message streams.
   */
  readTarget(streaming: boolean, compressed: boolean): Uint8Array | null {
    if (!streaming) return null;
    const buffer = this.#buffer ??= takeWriteBuffer(STREAM_READ);
    return compressed ? buffer.subarray(0, INFLATE_READ) : buffer;
  }

  /** Gives the read buffer back between streamed messages. */
  idle(): void {
    if (this.#buffer === null || this.#holders.length > 0) return;
    giveWriteBuffer(this.#buffer);
    this.#buffer = null;
  }

  start(type: "text" | "binary"): void {
    const limit = this.#init.limits.maxQueuedBytes;
    const current = new InboundStream(type === "text", limit);
    this.#current = current;
    // Counted as over maxQueuedBytes: reading stops until it is taken.
    this.#init.queue.push(
      { type, stream: current.stream } as TextStreamMessage,
      limit + 1,
    );
  }

  data(piece: Uint8Array | string, scratch: boolean): void {
    const current = this.#current!;
    current.data(piece, scratch);
    // Copies may be held already (see InboundStream.release).
    if (current.holding && !this.#holders.includes(current)) {
      this.#holders.push(current);
    }
  }

  end(): void {
    this.#current!.end();
    this.#current = null;
  }

  abort(): void {
    const current = this.#current;
    if (current === null) return;
    this.#current = null;
    const { closeCode: code, closeReason: reason } = this.#init.protocol;
    current.abort(
      new WebSocketError(
        "SOCKET_CLOSED",
        `Cannot read the message: the connection closed before its end: ${code}${
          reason === "" ? "" : ` ${reason}`
        }`,
        { closeCode: code },
      ),
    );
  }

  /** The socket's async iterator, once streams were asked for. */
  next(): Promise<IteratorResult<Message, undefined>> {
    return this.#init.read().then((message) =>
      message === null
        ? { done: true, value: undefined }
        : { done: false, value: message }
    );
  }

  /** What `readStream()` returns for what was queued. */
  toStreamed = (
    item: Message | StreamedMessage | null,
  ): StreamedMessage | null => {
    if (item === null || "stream" in item) return item;
    if (item.type === "text") {
      const data = item.data;
      return {
        type: "text",
        stream: new ReadableStream<string>({
          start(controller) {
            if (data.length > 0) controller.enqueue(data);
            controller.close();
          },
        }),
      };
    }
    if (item.type === "binary") {
      return { type: "binary", stream: bytesStream(item.data) };
    }
    return item;
  };

  /** What `read()` returns for what was queued: streamed messages gathered. */
  toWhole = (
    item: Message | StreamedMessage | null,
  ): Message | null | Promise<Message | null> => {
    if (item === null || !("stream" in item)) return item;
    return this.#gather(item);
  };

  async #gather(
    item: TextStreamMessage | BinaryStreamMessage,
  ): Promise<Message | null> {
    const limit = this.#init.limits.maxMessageSize;
    const parts: (string | Uint8Array)[] = [];
    let size = 0;
    try {
      for await (const part of item.stream as AsyncIterable<Uint8Array>) {
        size += part.length;
        if (size > limit) {
          this.#init.protocol.failConnection(
            MESSAGE_TOO_BIG,
            `Message too big: limit is ${limit} bytes, received ${size} bytes or more`,
          );
          await item.stream.cancel();
          return this.#init.read();
        }
        parts.push(part);
      }
    } catch {
      // Cut short: the close message follows in the queue.
      return this.#init.read();
    }
    if (item.type === "text") {
      return { type: "text", data: (parts as string[]).join("") };
    }
    const data = new Uint8Array(size);
    let offset = 0;
    for (const part of parts as Uint8Array[]) {
      data.set(part, offset);
      offset += part.length;
    }
    return { type: "binary", data };
  }
}

/** A byte stream of one whole payload, handed over uncopied. */
function bytesStream(data: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream({
    type: "bytes",
    start(controller) {
      // A whole message owns its bytes: enqueue() transfers them.
      if (data.length > 0) controller.enqueue(data);
      controller.close();
    },
  });
}
