/**
 * `Socket`: one WebSocket connection over a `Deno.Conn`, with its read
 * loop, read queue, write queue, keepalive and close handshake.
 *
 * @module
 */

import { closeArgumentError, NORMAL_CLOSURE, Transport } from "./close.ts";
import type { PerMessageDeflate } from "./deflate_codec.ts";
import type { WebSocketError } from "./errors.ts";
import { OPCODE_CLOSE, OPCODE_PING } from "./frame.ts";
import {
  type CloseInfo,
  type Message,
  Protocol,
  type ProtocolSink,
  State,
} from "./protocol.ts";
import { ReadQueue } from "./read_queue.ts";
import { type Deadline, deadlinesOf } from "./deadlines.ts";
import {
  DIRECT_READ_MIN,
  needsOtherBuffer,
  nextReadBuffer,
  releaseReadBuffer,
  smallReadBuffer,
  TURN_BYTES,
} from "./buffers.ts";
import { Subscriptions } from "./subscriptions.ts";
import { WriteQueue, type WriteQueueOwner } from "./write_queue.ts";
import { type Keepalive, Keepalives, type Watch } from "./keepalive.ts";
import type { FinishListener, SocketInit, SocketLimits } from "./options.ts";
import type { UpgradeRequestInfo, UpgradeResponseInfo } from "./handshake.ts";
import { type MessageType, sendable } from "./outgoing.ts";
import type { TopicRegistry } from "./topics.ts";
import { Inbound, type StreamedMessage } from "./message_stream.ts";
import type { StreamSource } from "./stream_writer.ts";
import {
  connectionClosed,
  connectionLost,
  Sender,
  type SenderOwner,
} from "./sender.ts";
import { readableOf, writableOf } from "./web_streams.ts";

const EMPTY = new Uint8Array(0);

/** Per-message bookkeeping counted against `maxQueuedBytes`. */
const MESSAGE_OVERHEAD = 64;

function noop(): void {}

/**
 * Starts the close handshake of `sock` as its `close()` does, without the
 * promise: the server's own closes (after a handler, on shutdown), whose
 * promise nobody awaited. `code` and `reason` are valid.
 */
export let startClose: (sock: Socket, code: number, reason?: string) => void;

/**
 * One WebSocket connection: read whole messages, write frames, close.
 *
 * `Socket`s are made by `listen` (handed to the handler) and `connect`.
 *
 * @example Echo every message back
 * ```ts
 * import { connect, listen } from "@silly/websocket";
 * import assert from "node:assert/strict";
 *
 * const server = listen({
 *   addr: "127.0.0.1:0",
 *   async handler(sock) {
 *     for await (const msg of sock) {
 *       if (msg.type === "text" || msg.type === "binary") await sock.write(msg.data, msg.type);
 *     }
 *   },
 * });
 * const sock = await connect(`ws://127.0.0.1:${server.addr.port}`);
 * await sock.write("hello", "text");
 * assert.deepEqual(await sock.read(), { type: "text", data: "hello" });
 * await sock.close();
 * await server.close();
 * ```
 */
export class Socket implements AsyncIterable<Message> {
  // Keepalive acts on sockets through these, shared by all: no closures
  // per socket.
  static #keepalives = new Keepalives<Socket>({
    ping(sock) {
      if (sock.#protocol.open) {
        sock.#writes.push(true, false, OPCODE_PING, EMPTY);
      }
    },
    expire(sock) {
      sock.#dropReason =
        `Keepalive timeout: nothing from the peer within ${sock.#limits.pongTimeout} ms of a ping`;
      sock.#closeConn();
    },
    // Paused by our own backpressure: the pong may be sitting unread, so
    // the peer is not the one that stopped.
    readPaused: (sock) => sock.#paused,
  });

  // What the protocol, the write queue and the sender call back, and the
  // iterator: small objects whose methods are shared, where closures made
  // per socket cost an idle connection about 500 bytes.
  static #Link = class implements ProtocolSink, SenderOwner, WriteQueueOwner {
    constructor(readonly sock: Socket) {}
    deliver(message: Message, size: number): void {
      const queue = this.sock.#queue;
      queue.push(message, size + MESSAGE_OVERHEAD);
      if (message.type === "close") queue.end();
    }
    sendControl(opcode: number, payload: Uint8Array): void {
      this.sock.#writes.push(true, false, opcode, payload);
      if (opcode === OPCODE_CLOSE) this.sock.#armCloseTimer();
    }
    closeTransport(failed: boolean): void {
      this.sock.#shutdown(failed);
    }
    get closed(): Promise<CloseInfo> {
      return this.sock.closed;
    }
    drop(reason: string): void {
      this.sock.#dropReason = reason;
      this.sock.#closeConn();
    }
    writeFailed(cause: unknown): WebSocketError {
      this.sock.#closeConn();
      return connectionLost(cause);
    }
  };

  static #Messages = class implements AsyncIterator<Message> {
    constructor(readonly sock: Socket) {}
    next(): Promise<IteratorResult<Message>> {
      const { sock } = this;
      return sock.#inbound === null
        ? (sock.#queue as ReadQueue<Message>).next()
        : sock.#inbound.next();
    }
  };

  /** The underlying connection (Deno has no `fd`; this replaces the seed's `sock.fd`). */
  readonly conn: Deno.Conn;
  /** The subprotocol the handshake chose, `""` when none. */
  readonly protocol: string;
  /** The extensions the handshake negotiated, `""` when none. */
  readonly extensions: string;
  /** The upgrade request (the seed's `sock.stream`). */
  readonly request: UpgradeRequestInfo;
  /** Client side: the handshake response; `null` on the server side. */
  readonly response: UpgradeResponseInfo | null;
  /**
   * Per-connection application data: on the server side, the `data` the
   * `upgrade` hook returned (a logged-in user, a room); `undefined`
   * otherwise. Yours to change.
   */
  data: unknown;

  #protocol: Protocol;
  #queue = new ReadQueue<Message | StreamedMessage>();
  // Made by the first readStream(): streamed messages, the protocol's sink.
  #inbound: Inbound | null = null;
  #writes: WriteQueue;
  #limits: SocketLimits;
  #sender: Sender;
  #topics: TopicRegistry | undefined;
  #subscriptions: Subscriptions | null = null;
  #deflate: PerMessageDeflate | null;

  // `closed`, made when first asked for; what it settles with, once known.
  #closed: Promise<CloseInfo> | null = null;
  #resolveClosed: ((info: CloseInfo) => void) | null = null;
  #closeInfo: CloseInfo | null = null;
  #onFinish: FinishListener | null = null;
  // Where the TCP connection is; the protocol's state says where the
  // WebSocket is.
  #transport: Transport = Transport.OPEN;
  // Made only when the read loop has to wait for the conn to close.
  #transportDone: PromiseWithResolvers<void> | null = null;
  // Reading is paused by backpressure (the application is behind).
  #paused = false;
  // Wakes a read paused by backpressure when the close begins.
  #wakePause: (() => void) | null = null;
  #finished = false;
  #closeTimer: Deadline | undefined;
  #keepalive: Keepalive<Socket> | null = null;
  #watch: Watch<Socket> | null = null;
  #dropReason = "";

  /**
   * Made by `listen` and `connect`; not meant to be called directly.
   *
   * @param init the connection and what its handshake negotiated
   */
  constructor(init: SocketInit) {
    this.conn = init.conn;
    this.protocol = init.protocol;
    this.extensions = init.extensions;
    this.request = init.request;
    this.response = init.response;
    this.#limits = init.limits;
    this.#deflate = init.deflate ?? null;
    this.#topics = init.topics;
    this.data = init.data;
    this.#onFinish = init.onFinish ?? null;
    const link = new Socket.#Link(this);
    this.#protocol = new Protocol(link, {
      client: init.client,
      maxMessageSize: init.limits.maxMessageSize,
      maxFrameSize: init.limits.maxFrameSize,
      maxStreamedMessageSize: init.limits.maxStreamedMessageSize,
      maxStreamedFrameSize: init.limits.maxStreamedFrameSize,
      deflate: this.#deflate,
    });
    this.#writes = new WriteQueue(
      init.conn,
      init.client,
      link,
      init.limits.writeHighWaterMark,
    );
    this.#sender = new Sender({
      protocol: this.#protocol,
      writes: this.#writes,
      limits: init.limits,
      deflate: this.#deflate,
      owner: link,
    });
    if (init.limits.pingInterval > 0) {
      this.#keepalive = Socket.#keepalives.for(init.limits);
      this.#watch = this.#keepalive.add(this);
    }
    this.#readLoop(init.head, init.readBuffer);
  }

  /** Settles, never rejects, when the connection is over. */
  get closed(): Promise<CloseInfo> {
    return this.#closed ??= this.#closeInfo !== null
      ? Promise.resolve(this.#closeInfo)
      : new Promise((resolve) => this.#resolveClosed = resolve);
  }

  /** The peer's address. */
  get remoteAddr(): Deno.NetAddr {
    return this.conn.remoteAddr as Deno.NetAddr;
  }

  /** This side's address. */
  get localAddr(): Deno.NetAddr {
    return this.conn.localAddr as Deno.NetAddr;
  }

  /** Bytes accepted by `write` and not yet handed to the OS. */
  get bufferedAmount(): number {
    return this.#writes.bufferedAmount;
  }

  /**
   * `"open"`, `"closing"` once a close frame went either way, `"closed"`
   * once `closed` has settled.
   */
  get readyState(): "open" | "closing" | "closed" {
    if (this.#finished) return "closed";
    return this.#protocol.open ? "open" : "closing";
  }

  /**
   * Server side: hear what `server.publish(topic, ...)` sends. Subscriptions
   * end with the connection.
   *
   * @param topic any string
   * @throws {TypeError} on a client socket, which has no server to publish
   */
  subscribe(topic: string): void {
    if (this.#topics === undefined) {
      throw new TypeError(
        "Cannot subscribe: only sockets accepted by a server have topics",
      );
    }
    if (this.#finished) return;
    this.#subscriptions ??= new Subscriptions(
      this.#topics,
      this.#protocol,
      this.#writes,
    );
    this.#subscriptions.add(String(topic));
  }

  /**
   * Server side: stop hearing `topic`.
   *
   * @param topic a topic given to {@linkcode subscribe}
   * @throws {TypeError} on a client socket
   */
  unsubscribe(topic: string): void {
    if (this.#topics === undefined) {
      throw new TypeError(
        "Cannot unsubscribe: only sockets accepted by a server have topics",
      );
    }
    this.#subscriptions?.delete(String(topic));
  }

  /**
   * The next whole message. Fragmented messages arrive whole; pings, pongs
   * and the close message arrive in order between them. After the close
   * message (the peer's close frame, or code 1006 when the connection
   * dropped), returns `null`. Never rejects.
   *
   * @returns the next message, or `null` once the close message was read
   */
  read(): Promise<Message | null> {
    const inbound = this.#inbound;
    if (inbound === null) return this.#queue.read() as Promise<Message | null>;
    this.#protocol.streamTo(null);
    return this.#queue.read().then(inbound.toWhole);
  }

  /** Yields what {@linkcode read} returns until it returns `null`. */
  [Symbol.asyncIterator](): AsyncIterator<Message> {
    return new Socket.#Messages(this);
  }

  /**
   * The next message, a data message in pieces: its `stream` gives the
   * payload as the frames arrive (bytes from a byte stream, so a BYOB
   * reader can read into its own buffer; text decoded and validated piece
   * by piece), bounded by `maxStreamedMessageSize` (1 GiB) rather than
   * `maxMessageSize`. While the stream's consumer does not pull, the
   * socket stops reading; cancelling the stream drops the rest of the
   * message. Ping, pong and close messages come as from {@linkcode read};
   * `null` after the close message. A message streams when its first
   * frame arrives after a call to `readStream()` (and before one to
   * `read()`), else it comes as a stream of one piece. One cut short by
   * the connection's end errors its stream (`SOCKET_CLOSED`).
   *
   * @example Save an upload of any size, piece by piece
   * ```ts ignore
   * const msg = await sock.readStream();
   * if (msg?.type === "binary") {
   *   using file = await Deno.create("upload.bin");
   *   await msg.stream.pipeTo(file.writable);
   * }
   * ```
   *
   * @returns the next message, or `null` once the close message was read
   */
  readStream(): Promise<StreamedMessage | null> {
    const inbound = this.#inbound ??= new Inbound({
      queue: this.#queue,
      protocol: this.#protocol,
      limits: this.#limits,
      read: () => this.read(),
    });
    this.#protocol.streamTo(inbound);
    return this.#queue.read().then(inbound.toStreamed);
  }

  /**
   * Data messages in, as in the web's `WebSocketStream`: text as strings,
   * binary as bytes. It ends after the close; cancelling it closes.
   *
   * @example Print what comes
   * ```ts ignore
   * await sock.readable.pipeTo(new WritableStream({ write: console.log }));
   * ```
   */
  get readable(): ReadableStream<string | Uint8Array> {
    return readableOf(this);
  }

  /**
   * Data messages out, as in the web's `WebSocketStream`: strings as text,
   * bytes as binary. Closing it closes the socket; aborting it, with 1011.
   *
   * @example Pipe a stream of strings into the socket
   * ```ts ignore
   * await ReadableStream.from(["a", "b"]).pipeTo(sock.writable);
   * ```
   */
  get writable(): WritableStream<string | Uint8Array> {
    return writableOf(this);
  }

  /**
   * `await using sock = await connect(...)`: closes the socket (1000) and
   * waits until the connection is over.
   *
   * @example
   * ```ts ignore
   * await using sock = await connect("ws://127.0.0.1:8080");
   * await sock.send("hello"); // closed at the end of the block
   * ```
   */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Sends a message or control frame. Frames of concurrent writes never
   * interleave; data longer than `fragmentSize` goes as several frames.
   * Writes made in one turn of the event loop go out in one system call.
   *
   * The promise is backpressure, not delivery: it resolves at once while
   * `bufferedAmount` is at or under `writeHighWaterMark` (64 KiB), and
   * otherwise once the OS has taken enough to bring it back there, so
   * `await sock.write(x)` in a loop runs at full speed and still waits for
   * a peer that reads slowly. Not awaiting is fine too: the buffer is then
   * bounded by `maxBufferedAmount`. A frame queued and then lost because the
   * connection died does not reject its write: `closed` reports it, and
   * later writes reject. Use {@linkcode flush} to wait until the bytes were
   * handed to the OS.
   *
   * A `ReadableStream` or `AsyncIterable` of bytes (or strings) goes as one
   * message, a piece at a time with this backpressure; other data writes
   * wait for it. A source that throws closes the socket with 1011.
   *
   * A `Uint8Array` passed here is yours again once the write resolves:
   * frames under 256 KiB (every fragment, with the default `fragmentSize`)
   * are copied at once; bigger ones (unmasked, with a `fragmentSize` that
   * big) are written from your buffer and their write resolves once they
   * were.
   *
   * @example Echo, awaiting each write
   * ```ts ignore
   * for await (const msg of sock) {
   *   if (msg.type === "text" || msg.type === "binary") {
   *     await sock.write(msg.data, msg.type);
   *   }
   * }
   * ```
   *
   * @param data the payload (strings as UTF-8, `null` as empty), or a stream
   * @param type the frame type; `"close"` is the same as {@linkcode close}
   * @returns resolves when the writer may go on (see above)
   * @throws {RangeError} (as a rejection) a ping, pong or close payload over 125 bytes
   * @throws {TypeError} (as a rejection) an unknown `type` or `data` of the wrong kind
   * @throws {WebSocketError} (as a rejection, code `SOCKET_CLOSED`) the close handshake began or the connection was lost
   */
  write(
    data?: string | Uint8Array | null | StreamSource,
    type: MessageType = "binary",
  ): Promise<void> {
    return this.#sender.write(data, type);
  }

  /**
   * Sends a data message the web platform's way: a string as text, bytes
   * as binary. Resolves as {@linkcode write} does.
   *
   * @example
   * ```ts ignore
   * await sock.send("hello");                  // text
   * await sock.send(new Uint8Array([1, 2, 3])); // binary
   * ```
   *
   * @param data a string (text) or bytes (binary): a `Uint8Array`, another
   *   `ArrayBufferView` or an `ArrayBuffer`
   * @returns resolves when the writer may go on
   * @throws {TypeError} (as a rejection) `data` of another kind
   * @throws {WebSocketError} (as a rejection, code `SOCKET_CLOSED`) the close handshake began or the connection was lost
   */
  send(data: string | ArrayBufferView | ArrayBuffer): Promise<void> {
    const value = sendable(data);
    if (value instanceof TypeError) return Promise.reject(value);
    return this.write(value, typeof value === "string" ? "text" : "binary");
  }

  /**
   * Resolves when everything written so far was handed to the OS (which is
   * not the peer having read it). Rejects with a `WebSocketError`
   * (`SOCKET_CLOSED`) when the connection was lost first.
   *
   * @example Wait until a last message went out
   * ```ts ignore
   * await sock.write("bye", "text");
   * await sock.flush();
   * ```
   *
   * @returns resolves once the queued bytes are with the OS
   * @throws {WebSocketError} (as a rejection, code `SOCKET_CLOSED`) the connection was lost first
   */
  flush(): Promise<void> {
    return this.#writes.flush();
  }

  /**
   * Starts the close handshake: sends a close frame, waits (at most
   * `closeTimeout`) for the peer's, then closes TCP. Idempotent.
   *
   * @param code the close code: 1000, another registered code, or 3000-4999
   * @param reason at most 123 bytes of UTF-8
   * @returns resolves when the connection is over
   * @throws {RangeError} (as a rejection) an invalid code or a reason over 123 bytes
   */
  close(code: number = NORMAL_CLOSURE, reason = ""): Promise<void> {
    const error = closeArgumentError(code, reason);
    if (error !== null) return Promise.reject(error);
    this.#protocol.close(code, reason);
    return this.closed.then(noop);
  }

  static {
    startClose = (sock, code, reason = "") =>
      sock.#protocol.close(code, reason);
  }

  async #readLoop(
    head: Uint8Array,
    readBuffer: Uint8Array | undefined,
  ): Promise<void> {
    const protocol = this.#protocol;
    const queue = this.#queue;
    const limit = this.#limits.maxQueuedBytes;
    // Unsent bytes past which reading stops: what the peer makes us send on
    // our own (pongs, close replies) must not grow without bound when it
    // does not read them, and neither may what the application echoes.
    const sendLimit = Math.max(limit, this.#limits.writeHighWaterMark);
    const writes = this.#writes;
    const keepalive = this.#keepalive;
    const watch = this.#watch;
    const conn = this.conn;
    // See buffers.ts: small while quiet, bigger while busy.
    const small = smallReadBuffer(readBuffer);
    let buffer = readBuffer ?? small;
    let readSinceTurn = 0;
    // The last buffered read filled its buffer.
    let filled = false;
    try {
      if (head.length > 0) {
        // Once the handler (or connect's caller) could call readStream(),
        // and before the first read, which may overwrite the head.
        await new Promise((resolve) => setImmediate(resolve));
        protocol.receive(head);
        if (this.#inbound?.serve()) await this.#untilTaken(this.#inbound);
      }
      buffer = nextReadBuffer(buffer, small, 0);
      // The head's buffer is bigger than the small one: not kept by the
      // suspended loop's parameters for as long as the socket is idle.
      head = readBuffer = EMPTY;
      while (protocol.state !== State.CLOSED && !this.#transportClosed) {
        if (queue.bytes > limit && protocol.open) {
          // Backpressure: stop reading until the application catches up,
          // or until a close frame is sent: then the peer's reply must be
          // read (what comes before it is bounded by closeTimeout).
          await this.#pause(queue.drained(limit >>> 1));
          continue;
        }
        const inbound = this.#inbound;
        if (inbound !== null && inbound.blocked && protocol.open) {
          await this.#pause(inbound.pulled());
          continue;
        }
        if (writes.bufferedAmount > sendLimit) {
          // The peer is not reading what we send: stop reading what it
          // sends (a ping flood throttles the flooder) until half is out.
          // Not #paused: here the peer is to blame, and keepalive may drop it.
          await writes.drained(sendLimit >>> 1);
          continue;
        }
        const direct = protocol.directTarget(DIRECT_READ_MIN);
        const target = direct ??
          inbound?.readTarget(protocol.streaming, this.#deflate !== null) ??
          buffer;
        const n = await conn.read(target);
        if (n === null) break;
        if (watch !== null) {
          // Heard from the peer: alive, whatever it sent.
          watch.heard = keepalive!.ticks;
          watch.pinged = -1;
        }
        readSinceTurn += n;
        if (target !== buffer && direct === null) {
          protocol.receive(target.subarray(0, n));
          await this.#untilTaken(inbound!);
        } else if (direct !== null) {
          protocol.advance(n);
          // Drained, or more waiting: the next buffered read follows suit.
          if (n < direct.length) {
            buffer = nextReadBuffer(buffer, small, 0);
          }
        } else {
          protocol.receive(buffer.subarray(0, n));
          if (this.#inbound?.serve()) await this.#untilTaken(this.#inbound);
          const full = n === buffer.length;
          if (needsOtherBuffer(buffer, n, filled)) {
            buffer = nextReadBuffer(buffer, small, n);
          }
          filled = full;
        }
        if (readSinceTurn >= TURN_BYTES) {
          readSinceTurn = 0;
          await new Promise((resolve) => setImmediate(resolve));
        }
      }
    } catch {
      // A reset, or our own close() of the conn: both end the connection.
    }
    if (this.#transport === Transport.LINGERING) {
      // We failed the connection: our close frame goes out followed by a
      // FIN, and what the peer still sends is discarded until it closes
      // too, bounded by the close timer armed with our close frame. Closing
      // with unread input would answer the peer with a reset instead.
      this.#writes.idle().then(() => {
        if (!this.#transportClosed) conn.closeWrite().catch(noop);
      });
      try {
        while (!this.#transportClosed && await conn.read(buffer) !== null) {
          // Discard.
        }
      } catch {
        // Closed by the close timer, or reset.
      }
      await this.#writes.idle();
      this.#closeConn();
    } else if (protocol.state === State.CLOSED) {
      // Our close frame (reply or failure) is being flushed; wait for it.
      if (!this.#transportClosed) {
        await (this.#transportDone = Promise.withResolvers<void>()).promise;
      }
    } else {
      this.#closeConn();
    }
    this.#finish();
    // Nothing reads into it any more, and nothing delivered is a view of it.
    releaseReadBuffer(buffer);
  }

  /** Waits for `ready` or the start of the close: read backpressure. */
  async #pause(ready: Promise<void>): Promise<void> {
    if (this.#closingStarted()) return;
    this.#paused = true;
    // Not a race with a promise of the close: that would keep a reaction
    // per pause for as long as the connection lives.
    await new Promise<void>((resolve) => {
      this.#wakePause = resolve;
      ready.then(resolve);
    });
    this.#wakePause = null;
    this.#paused = false;
  }

  /** Streams hold views of the read buffer: taken, or copied, first. */
  async #untilTaken(inbound: Inbound): Promise<void> {
    while (inbound.serve() && this.#protocol.open) {
      await this.#pause(inbound.taken());
    }
    inbound.release();
    if (!this.#protocol.streaming) inbound.idle();
  }

  #finish(): void {
    this.#finished = true;
    this.#deflate?.close();
    this.#subscriptions?.clear();
    this.#subscriptions = null;
    this.#closeTimer?.cancel();
    if (this.#watch !== null) this.#keepalive!.remove(this.#watch);
    const protocol = this.#protocol;
    protocol.receiveEnd(this.#dropReason);
    protocol.releaseInput();
    this.#queue.end();
    this.#writes.failWith(() => connectionClosed(protocol.closeCode));
    const info = this.#closeInfo = {
      code: protocol.closeCode,
      reason: protocol.closeReason,
      wasClean: protocol.wasClean,
    };
    this.#resolveClosed?.(info);
    this.#onFinish?.socketFinished();
    this.#onFinish = null;
  }

  /** Flush what is queued (our close frame), then close TCP. */
  #shutdown(failed: boolean): void {
    if (this.#transport !== Transport.OPEN) return;
    this.#transport = failed ? Transport.LINGERING : Transport.DRAINING;
    this.#armCloseTimer();
    // A closure made at the close, not a field every idle socket holds; as
    // an argument (not assigned to a property) it is a young object.
    if (!failed) this.#writes.whenIdle(() => this.#closeConn());
  }

  #closeConn(): void {
    if (this.#transport === Transport.CLOSED) return;
    this.#transport = Transport.CLOSED;
    this.#sender.transportClosed = true;
    try {
      this.conn.close();
    } catch {
      // Already closed by the runtime.
    }
    this.#wakePause?.();
    this.#transportDone?.resolve();
  }

  get #transportClosed(): boolean {
    return this.#transport === Transport.CLOSED;
  }

  /** A close frame was sent, or the transport closed. */
  #closingStarted(): boolean {
    return this.#protocol.state !== State.OPEN ||
      this.#transport === Transport.CLOSED;
  }

  #armCloseTimer(): void {
    this.#wakePause?.();
    if (this.#closeTimer !== undefined || this.#transportClosed) return;
    this.#closeTimer = deadlinesOf(this.#limits.closeTimeout).add(() => {
      this.#dropReason = "Close timeout: no close frame from the peer";
      this.#closeConn();
    });
  }
}
