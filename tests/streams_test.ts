// Streams and the web platform (issue 16): messages read in pieces with
// readStream(), streams written as one message, readable/writable, and
// `await using`. Over real sockets on loopback.
import assert from "node:assert/strict";
import { connect, type Socket, WebSocketError } from "../mod.ts";
import {
  clientFrame,
  closePayload,
  concat,
  noise,
  RawClient,
  serve,
  settlesWithin,
  sleep,
  upgradeRequest,
  urlOf,
  utf8,
  within,
} from "./_helpers.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** Every chunk of a stream. */
async function chunks<T>(stream: ReadableStream<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const chunk of stream) out.push(chunk);
  return out;
}

/** Reads a binary stream message whole. */
async function bytesOf(sock: Socket): Promise<Uint8Array> {
  const msg = await within(sock.readStream(), "readStream()");
  assert.equal(msg?.type, "binary");
  return concat(
    ...await chunks((msg as { stream: ReadableStream<Uint8Array> }).stream),
  );
}

/**
 * A server whose handler is `handler`, and a promise of what it returned
 * or threw (so assertions run in the test, not in the server).
 */
function serveOne<T>(
  handler: (sock: Socket) => Promise<T>,
  options = {},
): { server: ReturnType<typeof serve>; result: Promise<T> } {
  const result = Promise.withResolvers<T>();
  const server = serve(async (sock) => {
    try {
      result.resolve(await handler(sock));
    } catch (error) {
      result.reject(error);
    }
  }, options);
  return { server, result: result.promise };
}

// -- readStream(): binary --

Deno.test("readStream() delivers a binary message's pieces as its frames arrive", async () => {
  const first = Promise.withResolvers<Uint8Array>();
  const { server, result } = serveOne(async (sock) => {
    const msg = await sock.readStream();
    assert.equal(msg?.type, "binary");
    const reader = (msg as { stream: ReadableStream<Uint8Array> }).stream
      .getReader();
    const one = await reader.read();
    first.resolve(one.value!);
    const rest: Uint8Array[] = [one.value!];
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      rest.push(value);
    }
    return concat(...rest);
  });
  await using _server = server;
  await using client = await RawClient.upgrade(server.addr.port);
  await client.send(
    clientFrame(0x2, new Uint8Array([1, 2, 3]), { fin: false }),
  );
  // The first piece comes before the message is complete.
  assert.deepEqual(
    await within(first.promise, "the first piece"),
    new Uint8Array([1, 2, 3]),
  );
  await client.send(clientFrame(0x0, new Uint8Array([4, 5]), { fin: false }));
  await client.send(clientFrame(0x0, new Uint8Array([6]), { fin: true }));
  assert.deepEqual(
    await within(result, "the message"),
    new Uint8Array([1, 2, 3, 4, 5, 6]),
  );
  await client.send(clientFrame(0x8, closePayload(1000)));
  await client.readClose();
});

Deno.test("readStream() streams a message 4 times maxMessageSize and bounds it by maxStreamedMessageSize", async () => {
  const { server, result } = serveOne(async (sock) => {
    const data = await bytesOf(sock);
    // A message over maxStreamedMessageSize fails (1009) at the frame that
    // takes it over: its stream errors.
    const over = await sock.readStream();
    const error = await chunks(
      (over as { stream: ReadableStream<Uint8Array> }).stream,
    ).catch((e) => e);
    return { data, error, close: await sock.readStream() };
  }, { maxMessageSize: 256 * KiB, maxStreamedMessageSize: 2 * MiB });
  await using _server = server;
  const sock = await connect(urlOf(server));
  const payload = noise(MiB);
  await sock.write(payload);
  await sock.write(new Uint8Array(3 * MiB));
  const { data, error, close } = await within(result, "the server");
  assert.deepEqual(data, payload);
  assert.ok(error instanceof WebSocketError);
  assert.equal((close as { code: number }).code, 1009);
  assert.equal((await sock.closed).code, 1009);
});

Deno.test("readStream() fails a frame header over maxStreamedMessageSize at once", async () => {
  const { server, result } = serveOne(
    (sock) => sock.readStream(),
    { maxStreamedMessageSize: MiB },
  );
  await using _server = server;
  await using client = await RawClient.upgrade(server.addr.port);
  // Only the header of a 2 MiB frame.
  await client.send(
    new Uint8Array([0x82, 0xff, 0, 0, 0, 0, 0, 0x20, 0, 0, 1, 2, 3, 4]),
  );
  const close = await within(client.readClose(), "the close frame");
  assert.equal(close?.code, 1009);
  assert.deepEqual(await within(result, "the server"), {
    type: "close",
    code: 1009,
    reason: "Frame too big: limit is 1048576 bytes, received 2097152 bytes",
  });
});

Deno.test("readStream() stops reading while the consumer does not pull, and goes on when it does", async () => {
  const started = Promise.withResolvers<ReadableStream<Uint8Array>>();
  const { server, result } = serveOne(async (sock) => {
    const msg = await sock.readStream();
    const stream = (msg as { stream: ReadableStream<Uint8Array> }).stream;
    started.resolve(stream);
    await result0.promise;
    return concat(...await chunks(stream)).length;
  }, { maxQueuedBytes: 64 * KiB });
  const result0 = Promise.withResolvers<void>();
  await using _server = server;
  const sock = await connect(urlOf(server), { writeHighWaterMark: 0 });
  const writing = sock.write(new Uint8Array(32 * MiB));
  await within(started.promise, "the stream");
  // The server holds about maxQueuedBytes and a read: the client's write
  // cannot finish while nobody pulls.
  assert.equal(await settlesWithin(writing, 300), false);
  assert.ok(sock.bufferedAmount > 16 * MiB, `buffered ${sock.bufferedAmount}`);
  result0.resolve();
  assert.equal(await within(result, "the whole message"), 32 * MiB);
  await within(writing, "the write");
  await sock.close();
});

Deno.test("readStream() cancelled mid-message drops the rest, and the next message reads", async () => {
  const { server, result } = serveOne(async (sock) => {
    const msg = await sock.readStream();
    const reader = (msg as { stream: ReadableStream<Uint8Array> }).stream
      .getReader();
    const first = await reader.read();
    await reader.cancel();
    const next = await sock.read();
    return { first: first.value!.length > 0, next };
  });
  await using _server = server;
  await using client = await RawClient.upgrade(server.addr.port);
  await client.send(clientFrame(0x2, new Uint8Array(10), { fin: false }));
  await sleep(20);
  await client.send(
    clientFrame(0x0, new Uint8Array(100 * KiB), { fin: false }),
  );
  await client.send(clientFrame(0x0, new Uint8Array(10), { fin: true }));
  await client.send(clientFrame(0x1, "next"));
  const { first, next } = await within(result, "the server");
  assert.ok(first);
  assert.deepEqual(next, { type: "text", data: "next" });
  await client.send(clientFrame(0x8, closePayload(1000)));
  await client.readClose();
});

Deno.test("readStream() fills a BYOB reader's own buffer", async () => {
  const { server, result } = serveOne(async (sock) => {
    const msg = await sock.readStream();
    const reader = (msg as { stream: ReadableStream<Uint8Array> }).stream
      .getReader({ mode: "byob" });
    let buffer = new ArrayBuffer(1000);
    let total = 0;
    let reads = 0;
    for (;;) {
      const { done, value } = await reader.read(new Uint8Array(buffer));
      if (done) break;
      assert.ok(value.byteLength <= 1000);
      assert.ok(value.every((b) => b === 7));
      total += value.byteLength;
      reads++;
      buffer = value.buffer as ArrayBuffer;
    }
    return { total, reads };
  });
  await using _server = server;
  const sock = await connect(urlOf(server));
  await sock.write(new Uint8Array(300 * KiB).fill(7));
  const { total, reads } = await within(result, "the server");
  assert.equal(total, 300 * KiB);
  assert.ok(reads >= 300);
  await sock.close();
});

Deno.test("readStream() returns a message read whole as a stream of one piece, and control messages as read() does", async () => {
  const { server, result } = serveOne(async (sock) => {
    const whole = await sock.read();
    const ping = await sock.readStream();
    const text = await sock.readStream();
    const pieces = await chunks(
      (text as { stream: ReadableStream<string> }).stream,
    );
    const close = await sock.readStream();
    const end = await sock.readStream();
    return { whole, ping, pieces, close, end };
  });
  await using _server = server;
  const sock = await connect(urlOf(server));
  await sock.write("first", "text");
  await sock.write("p", "ping");
  await sock.write("second", "text");
  await sock.close(1000, "bye");
  const r = await within(result, "the server");
  assert.deepEqual(r.whole, { type: "text", data: "first" });
  assert.deepEqual(r.ping, { type: "ping", data: utf8("p") });
  assert.equal(r.pieces.join(""), "second");
  assert.deepEqual(r.close, { type: "close", code: 1000, reason: "bye" });
  assert.equal(r.end, null);
});

Deno.test("read() after readStream() gathers a message that started streaming", async () => {
  const { server, result } = serveOne(async (sock) => {
    const first = await sock.readStream();
    await chunks((first as { stream: ReadableStream<Uint8Array> }).stream);
    // The next message starts streaming before read() is called.
    await sleep(50);
    return await sock.read();
  });
  await using _server = server;
  const sock = await connect(urlOf(server));
  await sock.write(new Uint8Array(10));
  await sock.write(noise(200 * KiB));
  const msg = await within(result, "the server");
  assert.equal(msg?.type, "binary");
  assert.deepEqual((msg as { data: Uint8Array }).data, noise(200 * KiB));
  await sock.close();
});

Deno.test("readStream() errors the stream of a message cut short by the connection's end", async () => {
  const { server, result } = serveOne(async (sock) => {
    const msg = await sock.readStream();
    const error = await chunks(
      (msg as { stream: ReadableStream<Uint8Array> }).stream,
    ).catch((e) => e);
    return { error, close: await sock.read() };
  });
  await using _server = server;
  const client = await RawClient.upgrade(server.addr.port);
  await client.send(clientFrame(0x2, new Uint8Array(10), { fin: false }));
  await sleep(20);
  client.close();
  const { error, close } = await within(result, "the server");
  assert.ok(error instanceof WebSocketError);
  assert.equal(error.code, "SOCKET_CLOSED");
  assert.equal((close as { code: number }).code, 1006);
});

Deno.test("readStream() streams a first message that came in the same packet as the handshake", async () => {
  const { server, result } = serveOne(async (sock) => {
    return (await bytesOf(sock)).length;
  }, { maxMessageSize: 1024 });
  await using _server = server;
  await using client = await RawClient.connect(server.addr.port);
  // Over maxMessageSize, in fragments, sent with the upgrade request.
  await client.send(concat(
    utf8(upgradeRequest(server.addr.port)),
    clientFrame(0x2, new Uint8Array(1000), { fin: false }),
    clientFrame(0x0, new Uint8Array(1000), { fin: true }),
  ));
  assert.equal(await within(result, "the message"), 2000);
  await client.send(clientFrame(0x8, closePayload(1000)));
  await client.readClose();
});

Deno.test("maxStreamedMessageSize must be a positive number", () => {
  assert.throws(
    () => serve(() => {}, { maxStreamedMessageSize: 0 }),
    (e: unknown) =>
      e instanceof TypeError && /maxStreamedMessageSize/.test(e.message),
  );
});

// -- readStream(): text --

Deno.test("readStream() decodes a character split between frames once, whole", async () => {
  const { server, result } = serveOne(async (sock) => {
    const msg = await sock.readStream();
    assert.equal(msg?.type, "text");
    return await chunks((msg as { stream: ReadableStream<string> }).stream);
  });
  await using _server = server;
  await using client = await RawClient.upgrade(server.addr.port);
  const euro = utf8("a€b😀"); // 61 | e2 82 ac | 62 | f0 9f 98 80
  await client.send(clientFrame(0x1, euro.subarray(0, 2), { fin: false }));
  await sleep(20);
  await client.send(clientFrame(0x0, euro.subarray(2, 6), { fin: false }));
  await sleep(20);
  await client.send(clientFrame(0x0, euro.subarray(6, 8), { fin: false }));
  await sleep(20);
  await client.send(clientFrame(0x0, euro.subarray(8), { fin: true }));
  const pieces = await within(result, "the text");
  assert.equal(pieces.join(""), "a€b😀");
  // No piece holds half a character.
  for (const piece of pieces) assert.ok(!piece.includes("\uFFFD"));
  assert.deepEqual(pieces, ["a", "€b", "😀"]);
  await client.send(clientFrame(0x8, closePayload(1000)));
  await client.readClose();
});

Deno.test("readStream() fails invalid UTF-8 in a streamed text with 1007 at the piece that breaks it", async () => {
  const { server, result } = serveOne(async (sock) => {
    const msg = await sock.readStream();
    const error = await chunks(
      (msg as { stream: ReadableStream<string> }).stream,
    ).catch((e) => e);
    return { error, close: await sock.read() };
  });
  await using _server = server;
  await using client = await RawClient.upgrade(server.addr.port);
  await client.send(clientFrame(0x1, "ok", { fin: false }));
  await client.send(
    clientFrame(0x0, new Uint8Array([0xc0, 0x80]), { fin: false }),
  );
  const close = await within(client.readClose(), "the close frame");
  assert.equal(close?.code, 1007);
  const r = await within(result, "the server");
  assert.ok(r.error instanceof WebSocketError);
  assert.equal((r.close as { code: number }).code, 1007);
});

// -- write(stream) --

Deno.test("write(stream) sends a ReadableStream as one fragmented message", async () => {
  const { server, result } = serveOne(async (sock) => {
    const frames: { fin: boolean; opcode: number; length: number }[] = [];
    void frames;
    await sock.write(
      ReadableStream.from([
        utf8("ab"),
        utf8("cd"),
        new Uint8Array(0),
        utf8("e"),
      ]),
      "text",
    );
    await sock.write("after", "text");
  });
  await using _server = server;
  const sock = await connect(urlOf(server));
  assert.deepEqual(await within(sock.read(), "the message"), {
    type: "text",
    data: "abcde",
  });
  assert.deepEqual(await sock.read(), { type: "text", data: "after" });
  await within(result, "the server");
  await sock.close();
});

Deno.test("write(stream) puts each piece in its own frames, then an empty last frame", async () => {
  const { server, result } = serveOne(async (sock) => {
    async function* pieces() {
      yield new Uint8Array(3).fill(1);
      yield "x";
      yield new Uint8Array(70 * KiB).fill(2);
    }
    await sock.write(pieces(), "binary");
  });
  await using _server = server;
  await using client = await RawClient.upgrade(server.addr.port);
  const frames = [];
  for (;;) {
    const frame = await within(client.readFrame(), "a frame");
    frames.push({
      fin: frame!.fin,
      opcode: frame!.opcode,
      length: frame!.payload.length,
    });
    if (frame!.fin) break;
  }
  assert.deepEqual(frames, [
    { fin: false, opcode: 2, length: 3 },
    { fin: false, opcode: 0, length: 1 },
    { fin: false, opcode: 0, length: 64 * KiB },
    { fin: false, opcode: 0, length: 6 * KiB },
    { fin: true, opcode: 0, length: 0 },
  ]);
  await within(result, "the server");
});

Deno.test("write(stream) whose source throws closes with 1011 after what was sent, and rejects", async () => {
  const boom = new Error("boom");
  const { server, result } = serveOne(async (sock) => {
    async function* pieces() {
      yield utf8("sent");
      await sleep(10);
      throw boom;
    }
    return await sock.write(pieces()).catch((e) => e);
  });
  await using _server = server;
  await using client = await RawClient.upgrade(server.addr.port);
  const first = await within(client.readFrame(), "the first frame");
  assert.deepEqual(first, { fin: false, opcode: 2, payload: utf8("sent") });
  const close = await within(client.readClose(), "the close frame");
  assert.equal(close?.code, 1011);
  await client.send(clientFrame(0x8, closePayload(1011)));
  assert.equal(await within(result, "the write"), boom);
});

Deno.test("write(stream) lets pings through between its frames, and queues other data writes behind it", async () => {
  const gate = Promise.withResolvers<void>();
  const { server, result } = serveOne(async (sock) => {
    async function* pieces() {
      yield utf8("one");
      await gate.promise;
      yield utf8("two");
    }
    const streaming = sock.write(pieces());
    await sleep(10);
    const after = sock.write("after", "text");
    await sock.write("hi", "ping");
    gate.resolve();
    await streaming;
    await after;
  });
  await using _server = server;
  await using client = await RawClient.upgrade(server.addr.port);
  const frames = [];
  for (let i = 0; i < 5; i++) {
    const f = await within(client.readFrame(), "a frame");
    frames.push([f!.opcode, f!.fin, new TextDecoder().decode(f!.payload)]);
  }
  assert.deepEqual(frames, [
    [2, false, "one"],
    [9, true, "hi"],
    [0, false, "two"],
    [0, true, ""],
    [1, true, "after"],
  ]);
  await within(result, "the server");
});

Deno.test("server.publish() during a write(stream) lands after the streamed message, not between its frames", async () => {
  const gate = Promise.withResolvers<void>();
  let publish = () => {};
  const { server, result } = serveOne(async (sock) => {
    sock.subscribe("news");
    async function* pieces() {
      yield utf8("one");
      await gate.promise;
      yield utf8("two");
    }
    const streaming = sock.write(pieces());
    await sleep(10);
    publish();
    gate.resolve();
    await streaming;
  });
  publish = () => server.publish("news", "published", "text");
  await using _server = server;
  await using client = await RawClient.upgrade(server.addr.port);
  const frames = [];
  for (let i = 0; i < 4; i++) {
    const f = await within(client.readFrame(), "a frame");
    frames.push([f!.opcode, f!.fin, new TextDecoder().decode(f!.payload)]);
  }
  assert.deepEqual(frames, [
    [2, false, "one"],
    [0, false, "two"],
    [0, true, ""],
    [1, true, "published"],
  ]);
  await within(result, "the server");
});

Deno.test("write(stream) with a bad type or a bad piece rejects with a TypeError", async () => {
  const { server, result } = serveOne(async (sock) => {
    const badType = await sock.write(ReadableStream.from([utf8("x")]), "ping")
      .catch((e) => e);
    const badPiece = await sock.write(
      ReadableStream.from([42 as unknown as Uint8Array]),
    ).catch((e) => e);
    return { badType, badPiece };
  });
  await using _server = server;
  const sock = await connect(urlOf(server));
  const { badType, badPiece } = await within(result, "the server");
  assert.ok(badType instanceof TypeError);
  assert.ok(badPiece instanceof TypeError);
  assert.equal((await sock.closed).code, 1011);
});

Deno.test("readStream() and write(stream) echo a message of 8 MiB through a server that never holds it whole", async () => {
  await using server = serve(async (sock) => {
    for (;;) {
      const msg = await sock.readStream();
      if (msg === null) return;
      if (msg.type === "text" || msg.type === "binary") {
        await sock.write(msg.stream, msg.type);
      }
    }
  }, { maxMessageSize: MiB });
  const sock = await connect(urlOf(server), { maxMessageSize: 16 * MiB });
  const payload = noise(8 * MiB);
  await sock.write(payload);
  const echoed = await within(sock.read(), "the echo", 20_000);
  assert.deepEqual(echoed, { type: "binary", data: payload });
  await sock.close();
});

/** A server that echoes each message with readStream() into write(stream). */
function streamEcho(options = {}) {
  return serve(async (sock) => {
    for (;;) {
      const msg = await sock.readStream();
      if (msg === null) return;
      if (msg.type === "text" || msg.type === "binary") {
        await sock.write(msg.stream, msg.type);
      }
    }
  }, options);
}

Deno.test("write(stream) of a readStream() message echoes messages intact with fragments bigger than a piece", async () => {
  // Pieces go from the read buffer straight to the write queue: with
  // fragments of 1 MiB, whole 256 KiB pieces, which the queue would
  // otherwise write from where they are.
  await using server = streamEcho({ fragmentSize: MiB, maxMessageSize: MiB });
  const sock = await connect(urlOf(server), { maxMessageSize: 16 * MiB });
  const payloads = [noise(3 * MiB, 1), noise(3 * MiB + 5, 2), noise(7, 3)];
  for (const payload of payloads) void sock.write(payload);
  for (const payload of payloads) {
    const echoed = await within(sock.read(), "the echo", 20_000);
    assert.deepEqual(echoed, { type: "binary", data: payload });
  }
  await sock.close();
});

Deno.test("write(stream) of a readStream() message sends its pieces as frames, the last with FIN", async () => {
  await using server = streamEcho();
  await using client = await RawClient.upgrade(server.addr.port);
  const first = noise(100 * KiB, 4), second = noise(30 * KiB, 5);
  await client.send(concat(
    clientFrame(0x2, first, { fin: false }),
    clientFrame(0x0, second, { fin: true }),
  ));
  const frames = [];
  for (;;) {
    const frame = await within(client.readFrame(), "a frame");
    frames.push(frame!);
    if (frame!.fin) break;
  }
  assert.equal(frames[0].opcode, 2);
  assert.ok(frames.slice(1).every((frame) => frame.opcode === 0));
  assert.ok(frames.slice(0, -1).every((frame) => !frame.fin));
  assert.ok(frames.every((frame) => frame.payload.length <= 64 * KiB));
  assert.ok(frames.at(-1)!.payload.length > 0);
  assert.deepEqual(
    concat(...frames.map((frame) => frame.payload)),
    concat(first, second),
  );
  // An empty message too: one empty frame with FIN.
  await client.send(clientFrame(0x2, new Uint8Array(0)));
  assert.deepEqual(await within(client.readFrame(), "the empty echo"), {
    fin: true,
    opcode: 2,
    payload: new Uint8Array(0),
  });
});

Deno.test("write(stream) of a readStream() message keeps it locked while it writes, and leaves it unlocked and done, as pipeTo does", async () => {
  // Without a reader: Deno keeps every stream's objects until a full
  // collection, and a reader and the message were 40 % of what each
  // streamed message left there.
  const { server, result } = serveOne(async (sock) => {
    const msg = await sock.readStream();
    const stream = (msg as { stream: ReadableStream<Uint8Array> }).stream;
    const writing = sock.write(stream);
    const during = stream.locked;
    await writing;
    const after = stream.locked;
    const reader = stream.getReader();
    const rest = await reader.read();
    reader.releaseLock();
    // Closed and unlocked, like any stream pipeTo has read: written again,
    // it is an empty message.
    await sock.write(stream);
    return { during, after, done: rest.done };
  });
  await using _server = server;
  const sock = await connect(urlOf(server));
  const payload = noise(600 * KiB, 8);
  await sock.write(payload);
  assert.deepEqual(await within(sock.read(), "the echo"), {
    type: "binary",
    data: payload,
  });
  assert.deepEqual(await within(sock.read(), "the empty message"), {
    type: "binary",
    data: new Uint8Array(0),
  });
  assert.deepEqual(await within(result, "the server"), {
    during: true,
    after: false,
    done: true,
  });
  await sock.close();
});

Deno.test("write(stream) of a readStream() message locks it without a reader: other readers get a TypeError, a read past the lock errors, the echo is intact", async () => {
  const second = Promise.withResolvers<void>();
  const { server, result } = serveOne(async (sock) => {
    const msg = await sock.readStream();
    const stream = (msg as { stream: ReadableStream<Uint8Array> }).stream;
    const writing = sock.write(stream);
    const refusals: string[] = [];
    const refused = async (what: string, take: () => unknown) => {
      try {
        await take();
        refusals.push(`${what}: taken`);
      } catch (error) {
        refusals.push(`${what}: ${(error as Error).name}`);
      }
    };
    await refused("getReader", () => stream.getReader());
    await refused("byob", () => stream.getReader({ mode: "byob" }));
    await refused("cancel", () => stream.cancel());
    await refused("pipeTo", () => stream.pipeTo(new WritableStream()));
    await refused("tee", () => stream.tee());
    await refused("for await", async () => {
      for await (const _ of stream) break;
    });
    await refused("Response", () => new Response(stream));
    // A read past the lock (the prototype's own getReader, as the runtime
    // might read) errors the stream rather than taking any of its bytes.
    const bypass = ReadableStream.prototype.getReader as (
      this: ReadableStream<Uint8Array>,
    ) => ReadableStreamDefaultReader<Uint8Array>;
    const body = bypass.call(stream).read().then(
      () => "read",
      (error) => error.name,
    );
    second.resolve();
    await writing;
    return { refusals, body: await body, after: stream.locked };
  });
  await using _server = server;
  await using client = await RawClient.upgrade(server.addr.port);
  const first = noise(300 * KiB, 9), rest = noise(70 * KiB, 10);
  await client.send(clientFrame(0x2, first, { fin: false }));
  await within(second.promise, "the checks");
  await client.send(clientFrame(0x0, rest, { fin: true }));
  const frames = [];
  for (;;) {
    const frame = await within(client.readFrame(), "a frame");
    frames.push(frame!);
    if (frame!.fin) break;
  }
  assert.deepEqual(
    concat(...frames.map((frame) => frame.payload)),
    concat(first, rest),
  );
  assert.deepEqual(await within(result, "the server"), {
    refusals: [
      "getReader: TypeError",
      "byob: TypeError",
      "cancel: TypeError",
      "pipeTo: TypeError",
      "tee: TypeError",
      "for await: TypeError",
      "Response: TypeError",
    ],
    body: "TypeError",
    // The reader that got past the lock holds it now.
    after: true,
  });
});

Deno.test("write(stream) of a readStream() message cut short after a read past its lock rejects with SOCKET_CLOSED", async () => {
  const { server, result } = serveOne(async (sock) => {
    const msg = await sock.readStream();
    const stream = (msg as { stream: ReadableStream<Uint8Array> }).stream;
    const writing = sock.write(stream).catch((error) => error);
    const bypass = ReadableStream.prototype.getReader as (
      this: ReadableStream<Uint8Array>,
    ) => ReadableStreamDefaultReader<Uint8Array>;
    const read = await bypass.call(stream).read().catch((error) => error);
    return { read: read.name, write: await writing };
  });
  await using _server = server;
  const client = await RawClient.upgrade(server.addr.port);
  await client.send(clientFrame(0x2, noise(10, 11), { fin: false }));
  await within(client.readFrame(), "the first piece");
  client.close();
  const { read, write } = await within(result, "the server");
  assert.equal(read, "TypeError");
  assert.ok(write instanceof WebSocketError);
  assert.equal(write.code, "SOCKET_CLOSED");
});

Deno.test("write(stream) of a readStream() message already partly read sends the rest", async () => {
  const { server, result } = serveOne(async (sock) => {
    const msg = await sock.readStream();
    const stream = (msg as { stream: ReadableStream<Uint8Array> }).stream;
    const reader = stream.getReader();
    const head = await reader.read();
    reader.releaseLock();
    await sock.write(stream);
    return head.value!.length;
  });
  await using _server = server;
  const sock = await connect(urlOf(server));
  const payload = noise(3000, 6);
  await sock.write(payload);
  const taken = await within(result, "the server");
  assert.ok(taken > 0);
  assert.deepEqual(await within(sock.read(), "the rest"), {
    type: "binary",
    data: payload.subarray(taken),
  });
  await sock.close();
});

Deno.test("write(stream) of a readStream() message cut short by the connection's end rejects with SOCKET_CLOSED", async () => {
  const { server, result } = serveOne(async (sock) => {
    const msg = await sock.readStream();
    return await sock.write(
      (msg as { stream: ReadableStream<Uint8Array> }).stream,
    ).catch((e) => e);
  });
  await using _server = server;
  const client = await RawClient.upgrade(server.addr.port);
  await client.send(clientFrame(0x2, noise(10, 7), { fin: false }));
  const echoed = await within(client.readFrame(), "the first piece");
  assert.deepEqual(echoed, { fin: false, opcode: 2, payload: noise(10, 7) });
  client.close();
  const error = await within(result, "the write");
  assert.ok(error instanceof WebSocketError);
  assert.equal(error.code, "SOCKET_CLOSED");
});

Deno.test("write(stream) of a readStream() message stops when the close handshake began, and drops the rest", async () => {
  const closing = Promise.withResolvers<void>();
  const { server, result } = serveOne(async (sock) => {
    const msg = await sock.readStream();
    const writing = sock.write(
      (msg as { stream: ReadableStream<Uint8Array> }).stream,
    ).catch((e) => e);
    await closing.promise;
    const closed = sock.close();
    const error = await writing;
    await closed;
    return error;
  });
  await using _server = server;
  await using client = await RawClient.upgrade(server.addr.port);
  await client.send(clientFrame(0x2, noise(10, 8), { fin: false }));
  await within(client.readFrame(), "the first piece");
  closing.resolve();
  const close = await within(client.readClose(), "the close frame");
  assert.equal(close?.code, 1000);
  await client.send(clientFrame(0x0, noise(10, 9), { fin: true }));
  await client.send(clientFrame(0x8, closePayload(1000)));
  const error = await within(result, "the write");
  assert.ok(error instanceof WebSocketError);
});

// -- Compression --

Deno.test("readStream() and write(stream) inflate and deflate piece by piece with permessage-deflate", async () => {
  await using server = serve(async (sock) => {
    for (;;) {
      const msg = await sock.readStream();
      if (msg === null) return;
      if (msg.type === "text" || msg.type === "binary") {
        await sock.write(msg.stream, msg.type);
      }
    }
  }, { compression: true, maxMessageSize: 64 * KiB });
  const sock = await connect(urlOf(server), {
    compression: true,
    maxMessageSize: 16 * MiB,
  });
  assert.match(sock.extensions, /permessage-deflate/);
  const text = "streamed text, compressed ".repeat(40_000); // ~1 MiB
  await sock.write(text, "text");
  assert.deepEqual(await within(sock.read(), "the echo"), {
    type: "text",
    data: text,
  });
  const bytes = noise(300 * KiB);
  await sock.write(bytes);
  assert.deepEqual(await within(sock.read(), "the echo"), {
    type: "binary",
    data: bytes,
  });
  // The client sends a stream too; the context carries over.
  await sock.write(ReadableStream.from(["a", "b", "c"]), "text");
  assert.deepEqual(await within(sock.read(), "the echo"), {
    type: "text",
    data: "abc",
  });
  await sock.write(ReadableStream.from([]), "binary");
  assert.deepEqual(await within(sock.read(), "the echo"), {
    type: "binary",
    data: new Uint8Array(0),
  });
  await sock.close();
});

Deno.test("readStream() bounds an inflating message by maxStreamedMessageSize (1009)", async () => {
  const { server, result } = serveOne(async (sock) => {
    const msg = await sock.readStream();
    const error = await chunks(
      (msg as { stream: ReadableStream<Uint8Array> }).stream,
    ).catch((e) => e);
    return { error, close: await sock.read() };
  }, { compression: true, maxStreamedMessageSize: MiB });
  await using _server = server;
  const sock = await connect(urlOf(server), { compression: true });
  // Zeros: a few KiB on the wire, 4 MiB inflated.
  await sock.write(new Uint8Array(4 * MiB));
  const { error, close } = await within(result, "the server");
  assert.ok(error instanceof WebSocketError);
  assert.equal((close as { code: number }).code, 1009);
  assert.equal((await sock.closed).code, 1009);
});

// -- readable / writable --

Deno.test("sock.readable yields data messages and ends after the close; sock.writable sends strings as text", async () => {
  await using server = serve(async (sock) => {
    await sock.readable.pipeTo(sock.writable);
  });
  const sock = await connect(urlOf(server));
  const writer = sock.writable.getWriter();
  await writer.write("text");
  await writer.write(new Uint8Array([1, 2]));
  await sock.write("p", "ping");
  writer.releaseLock();
  const reader = sock.readable.getReader();
  assert.deepEqual(await within(reader.read(), "text"), {
    done: false,
    value: "text",
  });
  assert.deepEqual(await within(reader.read(), "bytes"), {
    done: false,
    value: new Uint8Array([1, 2]),
  });
  reader.releaseLock();
  // Closing the writable closes the socket; the readable then ends.
  await sock.writable.close();
  assert.equal((await sock.closed).code, 1000);
  assert.deepEqual(await chunks(sock.readable), []);
});

Deno.test("sock.writable aborted closes the socket with 1011", async () => {
  const { server, result } = serveOne((sock) => sock.read());
  await using _server = server;
  const sock = await connect(urlOf(server));
  await sock.writable.abort(new Error("gone"));
  assert.equal((await within(result, "the server"))?.type, "close");
  assert.equal((await sock.closed).code, 1011);
});

// -- await using --

Deno.test("await using closes a Socket and a Server and waits for the close", async () => {
  let closed: Promise<{ code: number }>;
  let server;
  {
    await using s = serve(async (sock) => {
      await sock.read();
    });
    server = s;
    {
      await using sock = await connect(urlOf(s));
      closed = sock.closed;
      await sock.send("hi");
    }
    assert.equal(await settlesWithin(closed, 0), true);
    assert.equal((await closed).code, 1000);
  }
  assert.equal(server.connections, 0);
  assert.equal(await settlesWithin(server.finished, 0), true);
});

// -- Memory --

/**
 * Starts tests/fixtures/stream_rss.ts, sends it `messages` from this
 * process with `fragmentSize`, and returns what it reported.
 */
async function streamToFixture(
  messages: number[],
  fragmentSize: number,
): Promise<{ sizes: number[]; before: number; peak: number }> {
  const fixture = new URL("./fixtures/stream_rss.ts", import.meta.url);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      // Deno reads /proc only with every permission.
      "--allow-all",
      fixture.pathname,
      String(messages.length),
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).values();
  let out = "";
  const line = async () => {
    while (!out.includes("\n")) {
      const { done, value } = await lines.next();
      if (done) break;
      out += value;
    }
    const end = out.indexOf("\n");
    const first = out.slice(0, end);
    out = out.slice(end + 1);
    return first;
  };
  const port = Number((await within(line(), "READY")).split(" ")[1]);
  const sock = await connect(`ws://127.0.0.1:${port}`, {
    fragmentSize,
    maxMessageSize: 1024 * MiB,
  });
  // One buffer, sent again and again: this process's memory stays small.
  const piece = new Uint8Array(MiB).fill(0x5a);
  for (const size of messages) {
    const pieces = async function* () {
      for (let sent = 0; sent < size; sent += piece.length) yield piece;
    };
    await sock.write(pieces());
  }
  const report = JSON.parse(await within(line(), "the report", 60_000));
  await sock.close();
  await lines.return?.();
  await child.status;
  return report;
}

Deno.test("a 64 MiB message (4 × maxMessageSize) read with readStream() grows the server's RSS by 48 MiB at most", async () => {
  const { sizes, before, peak } = await streamToFixture([64 * MiB], 64 * KiB);
  assert.deepEqual(sizes, [64 * MiB]);
  const growth = peak - before;
  assert.ok(growth <= 48 * MiB, `RSS grew by ${(growth / MiB).toFixed(1)} MiB`);
});

Deno.test({
  name: "a 1 GiB message passes through readStream() (slow: STREAM_SOAK=1)",
  ignore: Deno.env.get("STREAM_SOAK") !== "1",
  async fn() {
    const { sizes, before, peak } = await streamToFixture([1024 * MiB], MiB);
    assert.deepEqual(sizes, [1024 * MiB]);
    const growth = peak - before;
    assert.ok(
      growth <= 48 * MiB,
      `RSS grew by ${(growth / MiB).toFixed(1)} MiB`,
    );
  },
});
