/**
 * `Socket` over real loopback connections: our client against our server,
 * or against a raw TCP peer where the bytes on the wire matter.
 */

import assert from "node:assert/strict";
import { connect, type Message, WebSocketError } from "../mod.ts";
import { FakeTime } from "./_fake_time.ts";
import {
  answerClose,
  clientFrame,
  closePayload,
  concat,
  connectToRaw,
  drain,
  echo,
  RawClient,
  RawServer,
  readAll,
  serve,
  sleep,
  urlOf,
  utf8,
  waitFor,
  within,
} from "./_helpers.ts";

function isSocketClosed(error: unknown): boolean {
  return error instanceof WebSocketError && error.code === "SOCKET_CLOSED";
}

// -- Reading --

Deno.test("read() returns messages in order, then the close message, then null", async () => {
  await using server = serve(async (sock) => {
    await sock.write("one", "text");
    await sock.write(new Uint8Array([1, 2, 3]));
  });
  const sock = await within(connect(urlOf(server)));
  assert.deepEqual(await within(sock.read()), { type: "text", data: "one" });
  assert.deepEqual(await within(sock.read()), {
    type: "binary",
    data: new Uint8Array([1, 2, 3]),
  });
  assert.deepEqual(await within(sock.read()), {
    type: "close",
    code: 1000,
    reason: "",
  });
  assert.equal(await within(sock.read()), null);
  assert.equal(await within(sock.read()), null);
  assert.deepEqual(await within(sock.closed), {
    code: 1000,
    reason: "",
    wasClean: true,
  });
  await sock.close();
});

Deno.test("async iteration yields every message up to and with the close message", async () => {
  await using server = serve(async (sock) => {
    for (let i = 0; i < 3; i++) await sock.write(`message ${i}`, "text");
    await sock.close(4000, "done");
  });
  const sock = await within(connect(urlOf(server)));
  assert.deepEqual(await within(readAll(sock)), [
    { type: "text", data: "message 0" },
    { type: "text", data: "message 1" },
    { type: "text", data: "message 2" },
    { type: "close", code: 4000, reason: "done" },
  ]);
  assert.equal(await sock.read(), null);
  await sock.close();
});

Deno.test("a ping is answered with a pong carrying the same data", async () => {
  const seen = Promise.withResolvers<Message[]>();
  await using server = serve(async (sock) => seen.resolve(await readAll(sock)));
  const sock = await within(connect(urlOf(server)));
  await sock.write("are you there", "ping");
  assert.deepEqual(await within(sock.read()), {
    type: "pong",
    data: utf8("are you there"),
  });
  await sock.close();
  assert.deepEqual(await within(seen.promise), [
    { type: "ping", data: utf8("are you there") },
    { type: "close", code: 1000, reason: "" },
  ]);
});

Deno.test("control frames between fragments are delivered in order and the message arrives whole", async () => {
  const seen = Promise.withResolvers<Message[]>();
  await using server = serve(async (sock) => seen.resolve(await readAll(sock)));
  await using client = await within(RawClient.upgrade(server.addr.port));
  await client.send(concat(
    clientFrame(0x1, "hel", { fin: false }),
    clientFrame(0x9, "p"),
    clientFrame(0x0, "lo", { fin: false }),
    clientFrame(0xa, "q"),
    clientFrame(0x0, " world", { fin: true }),
    clientFrame(0x8, closePayload(1000)),
  ));
  const pong = await within(client.readFrame());
  assert.deepEqual(pong, { fin: true, opcode: 0xa, payload: utf8("p") });
  assert.deepEqual(await within(client.readClose()), {
    code: 1000,
    reason: "",
  });
  assert.deepEqual(await within(seen.promise), [
    { type: "ping", data: utf8("p") },
    { type: "pong", data: utf8("q") },
    { type: "text", data: "hello world" },
    { type: "close", code: 1000, reason: "" },
  ]);
});

Deno.test("a leading byte order mark is message content and survives a round trip", async () => {
  await using server = serve(echo);
  const sock = await within(connect(urlOf(server)));
  await sock.write("\uFEFFhello", "text");
  assert.deepEqual(await within(sock.read()), {
    type: "text",
    data: "\uFEFFhello",
  });
  await sock.close();
});

// -- Writing --

Deno.test("write() sends a string as its UTF-8 bytes when the type is binary", async () => {
  await using server = serve(echo);
  const sock = await within(connect(urlOf(server)));
  await sock.write("héllo ✓", "binary");
  assert.deepEqual(await within(sock.read()), {
    type: "binary",
    data: utf8("héllo ✓"),
  });
  await sock.write("default type");
  assert.deepEqual(await within(sock.read()), {
    type: "binary",
    data: utf8("default type"),
  });
  await sock.close();
});

Deno.test("write() sends null and undefined as an empty message", async () => {
  await using server = serve(echo);
  const sock = await within(connect(urlOf(server)));
  await sock.write(null, "text");
  assert.deepEqual(await within(sock.read()), { type: "text", data: "" });
  await sock.write(undefined, "binary");
  assert.deepEqual(await within(sock.read()), {
    type: "binary",
    data: new Uint8Array(0),
  });
  await sock.write();
  assert.deepEqual(await within(sock.read()), {
    type: "binary",
    data: new Uint8Array(0),
  });
  await sock.write(null, "ping");
  assert.deepEqual(await within(sock.read()), {
    type: "pong",
    data: new Uint8Array(0),
  });
  await sock.close();
});

Deno.test("write() rejects a control payload over 125 bytes with a RangeError", async () => {
  await using server = serve(echo);
  const sock = await within(connect(urlOf(server)));
  const isTooLong = (error: unknown) =>
    error instanceof RangeError && error.message.includes("125 bytes or less");
  await assert.rejects(sock.write(new Uint8Array(126), "ping"), isTooLong);
  await assert.rejects(sock.write(new Uint8Array(126), "pong"), isTooLong);
  await assert.rejects(sock.write(new Uint8Array(126), "close"), isTooLong);
  // 63 two-byte characters: 63 characters but 126 bytes.
  await assert.rejects(sock.write("é".repeat(63), "ping"), isTooLong);
  // The socket is still usable, and 125 bytes is allowed.
  await sock.write(new Uint8Array(125).fill(7), "ping");
  assert.deepEqual(await within(sock.read()), {
    type: "pong",
    data: new Uint8Array(125).fill(7),
  });
  await sock.close();
});

Deno.test("write() rejects with SOCKET_CLOSED once close() began", async () => {
  await using server = serve(drain);
  const sock = await within(connect(urlOf(server)));
  const closing = sock.close();
  await assert.rejects(sock.write("late", "text"), isSocketClosed);
  await assert.rejects(sock.write(null, "ping"), isSocketClosed);
  await within(closing);
  await assert.rejects(sock.write("later", "text"), isSocketClosed);
});

Deno.test('write(x, "close") is the same as close()', async () => {
  const cases: [
    Uint8Array | string | undefined,
    { code: number; reason: string },
  ][] = [
    [undefined, { code: 1000, reason: "" }],
    ["bye", { code: 1000, reason: "bye" }],
    [closePayload(4001, "custom"), { code: 4001, reason: "custom" }],
  ];
  for (const [data, expected] of cases) {
    const seen = Promise.withResolvers<Message[]>();
    await using server = serve(async (sock) =>
      seen.resolve(await readAll(sock))
    );
    const sock = await within(connect(urlOf(server)));
    await within(sock.write(data, "close"));
    assert.deepEqual(await within(seen.promise), [{
      type: "close",
      ...expected,
    }]);
    assert.deepEqual(await sock.closed, {
      code: expected.code,
      reason: "",
      wasClean: true,
    });
    assert.deepEqual(await sock.read(), {
      type: "close",
      code: expected.code,
      reason: "",
    });
    assert.equal(await sock.read(), null);
  }
});

Deno.test('write(x, "close") rejects a payload that close() would reject', async () => {
  await using server = serve(echo);
  const sock = await within(connect(urlOf(server)));
  await assert.rejects(sock.write(new Uint8Array([0x03]), "close"), RangeError);
  await assert.rejects(sock.write(closePayload(1005), "close"), RangeError);
  await assert.rejects(sock.write(closePayload(999), "close"), RangeError);
  await sock.write("still open", "text");
  assert.deepEqual(await within(sock.read()), {
    type: "text",
    data: "still open",
  });
  await sock.close();
});

Deno.test(
  'write(x, "close") with a payload over 125 bytes rejects with a RangeError saying "125 bytes or less"',
  {
    // Regression (issue 2): a string close payload over 125 bytes was taken
    // as the reason and rejected with the 123-byte reason message instead.
  },
  async () => {
    await using server = serve(echo);
    const sock = await within(connect(urlOf(server)));
    await assert.rejects(
      sock.write("A".repeat(200), "close"),
      (e: unknown) =>
        e instanceof RangeError && e.message.includes("125 bytes or less"),
    );
    await sock.close();
  },
);

Deno.test("concurrent writes arrive whole and in order", async () => {
  const COUNT = 60;
  const expected: Message[] = [];
  for (let i = 0; i < COUNT; i++) {
    if (i % 3 === 0) {
      expected.push({
        type: "binary",
        data: new Uint8Array(150_000 + i).fill(i),
      });
    } else if (i % 3 === 1) {
      expected.push({
        type: "text",
        data: `message ${i} ` + "✓".repeat(i * 1000),
      });
    } else expected.push({ type: "binary", data: new Uint8Array([i]) });
  }
  const seen = Promise.withResolvers<Message[]>();
  await using server = serve(async (sock) => {
    const messages: Message[] = [];
    for await (const msg of sock) {
      messages.push(msg);
      if (messages.length === COUNT) break;
    }
    seen.resolve(messages);
  });
  const sock = await within(connect(urlOf(server)));
  const writes: Promise<void>[] = [];
  for (let i = 0; i < COUNT; i++) {
    const msg = expected[i] as {
      type: "text" | "binary";
      data: string | Uint8Array;
    };
    writes.push(sock.write(msg.data, msg.type));
    // Some writes land while an earlier batch is still being flushed.
    if (i % 7 === 6) await sleep(0);
  }
  await within(Promise.all(writes));
  const received = await within(seen.promise);
  assert.equal(received.length, COUNT);
  for (let i = 0; i < COUNT; i++) {
    assert.deepEqual(received[i], expected[i], `message ${i}`);
  }
  assert.equal((await within(sock.read()))?.type, "close");
  await sock.close();
});

Deno.test("a text message fragmented inside a UTF-8 character arrives whole", async () => {
  await using server = serve(echo);
  const sock = await within(connect(urlOf(server), { fragmentSize: 3 }));
  await sock.write("ééé✓✓", "text");
  assert.deepEqual(await within(sock.read()), { type: "text", data: "ééé✓✓" });
  await sock.close();
});

Deno.test("bufferedAmount counts bytes not yet handed to the OS and is 0 once write() resolves", async () => {
  await using server = serve(drain);
  const sock = await within(connect(urlOf(server)));
  assert.equal(sock.bufferedAmount, 0);
  const writing = sock.write(new Uint8Array(100_000));
  assert.ok(
    sock.bufferedAmount >= 100_000,
    `bufferedAmount is ${sock.bufferedAmount}`,
  );
  await within(writing);
  assert.equal(sock.bufferedAmount, 0);
  await sock.close();
});

// -- Fragmentation, seen on the wire by a raw server --

Deno.test("a 200 KB write goes out as 4 masked frames of at most 64 KiB", async () => {
  await using raw = new RawServer();
  const { sock, peer } = await connectToRaw(raw);
  const data = new Uint8Array(200 * 1024).map((_, i) => i & 0xff);
  const writing = sock.write(data);
  const frames = [];
  for (let i = 0; i < 4; i++) frames.push(await within(peer.readFrame()));
  await within(writing);
  assert.deepEqual(frames.map((f) => f?.payload.length), [
    65536,
    65536,
    65536,
    8192,
  ]);
  assert.deepEqual(frames.map((f) => f?.fin), [false, false, false, true]);
  assert.deepEqual(frames.map((f) => f?.opcode), [0x2, 0x0, 0x0, 0x0]);
  assert.deepEqual(frames.map((f) => f?.masked), [true, true, true, true]);
  assert.deepEqual(frames.map((f) => f?.rsv), [0, 0, 0, 0]);
  assert.deepEqual(concat(...frames.map((f) => f!.payload)), data);

  const closing = sock.close();
  await answerClose(peer);
  await within(closing);
  assert.deepEqual(await sock.closed, {
    code: 1000,
    reason: "",
    wasClean: true,
  });
});

Deno.test("the fragmentSize option sets the fragment size, and control frames stay whole", async () => {
  await using raw = new RawServer();
  const { sock, peer } = await connectToRaw(raw, { fragmentSize: 1000 });
  const text = "a".repeat(2500);
  const writes = [
    sock.write(text, "text"),
    sock.write(new Uint8Array(100).fill(1), "ping"),
    sock.write(new Uint8Array(1000)),
  ];
  const frames = [];
  for (let i = 0; i < 5; i++) frames.push((await within(peer.readFrame()))!);
  await within(Promise.all(writes));
  assert.deepEqual(
    frames.map((f) => [f.opcode, f.fin, f.payload.length, f.masked]),
    [
      [0x1, false, 1000, true],
      [0x0, false, 1000, true],
      [0x0, true, 500, true],
      [0x9, true, 100, true],
      [0x2, true, 1000, true],
    ],
  );
  assert.equal(
    new TextDecoder().decode(
      concat(...frames.slice(0, 3).map((f) => f.payload)),
    ),
    text,
  );

  const closing = sock.close();
  await answerClose(peer);
  await within(closing);
});

Deno.test("every client frame is masked with a fresh key", async () => {
  await using raw = new RawServer();
  const { sock, peer } = await connectToRaw(raw);
  const keys = new Set<string>();
  const conn = peer.conn;
  // Read the raw bytes of 20 small frames to see their masking keys.
  for (let i = 0; i < 20; i++) await sock.write(new Uint8Array(4));
  let bytes = new Uint8Array(0);
  const chunk = new Uint8Array(1024);
  while (bytes.length < 20 * 10) {
    const n = await within(conn.read(chunk));
    assert.notEqual(n, null);
    bytes = concat(bytes, chunk.subarray(0, n!));
  }
  for (let i = 0; i < 20; i++) {
    const frame = bytes.subarray(i * 10, i * 10 + 10);
    assert.equal(frame[0], 0x82);
    assert.equal(frame[1], 0x80 | 4);
    keys.add(frame.subarray(2, 6).join(","));
    // The payload was zeros, so the masked payload is the key itself.
    assert.deepEqual(frame.subarray(6, 10), frame.subarray(2, 6));
  }
  assert.ok(keys.size >= 19, `only ${keys.size} distinct keys in 20 frames`);
  const closing = sock.close();
  await answerClose(peer);
  await within(closing);
});

// -- Close handshake --

Deno.test('close(4000, "x") completes the handshake on both sides', async () => {
  const serverSide = Promise.withResolvers<
    { messages: Message[]; closed: unknown }
  >();
  await using server = serve(async (sock) => {
    const messages = await readAll(sock);
    serverSide.resolve({ messages, closed: await sock.closed });
  });
  const sock = await within(connect(urlOf(server)));
  await within(sock.close(4000, "x"));
  // The peer echoes the code; its reply carries no reason.
  assert.deepEqual(await sock.closed, {
    code: 4000,
    reason: "",
    wasClean: true,
  });
  const { messages, closed } = await within(serverSide.promise);
  assert.deepEqual(messages, [{ type: "close", code: 4000, reason: "x" }]);
  assert.deepEqual(closed, { code: 4000, reason: "x", wasClean: true });
  assert.deepEqual(await sock.read(), {
    type: "close",
    code: 4000,
    reason: "",
  });
  assert.equal(await sock.read(), null);
});

Deno.test("a close started by the server is echoed by the client and both end clean", async () => {
  const serverClosed = Promise.withResolvers<unknown>();
  await using server = serve(async (sock) => {
    await sock.close(4001, "bye");
    serverClosed.resolve(await sock.closed);
  });
  const sock = await within(connect(urlOf(server)));
  assert.deepEqual(await within(readAll(sock)), [{
    type: "close",
    code: 4001,
    reason: "bye",
  }]);
  assert.deepEqual(await within(sock.closed), {
    code: 4001,
    reason: "bye",
    wasClean: true,
  });
  assert.deepEqual(await within(serverClosed.promise), {
    code: 4001,
    reason: "",
    wasClean: true,
  });
});

Deno.test("close() right after an un-awaited big write sends the close after the whole message", async () => {
  const seen = Promise.withResolvers<Message[]>();
  await using server = serve(async (sock) => seen.resolve(await readAll(sock)));
  const sock = await within(connect(urlOf(server)));
  const big = new Uint8Array(1024 * 1024).map((_, i) => i % 253);
  const writing = sock.write(big);
  await within(sock.close(4002, "after"));
  await within(writing);
  const messages = await within(seen.promise);
  assert.equal(messages.length, 2);
  assert.deepEqual(messages[0], { type: "binary", data: big });
  assert.deepEqual(messages[1], { type: "close", code: 4002, reason: "after" });
});

Deno.test("an empty close frame is reported as 1005 and answered with an empty close frame", async () => {
  const seen = Promise.withResolvers<
    { messages: Message[]; closed: unknown }
  >();
  await using server = serve(async (sock) => {
    const messages = await readAll(sock);
    seen.resolve({ messages, closed: await sock.closed });
  });
  await using client = await within(RawClient.upgrade(server.addr.port));
  await client.send(clientFrame(0x8));
  assert.deepEqual(await within(client.readFrame()), {
    fin: true,
    opcode: 0x8,
    payload: new Uint8Array(0),
  });
  assert.ok(await within(client.closedByPeer()));
  assert.deepEqual(await within(seen.promise), {
    messages: [{ type: "close", code: 1005, reason: "" }],
    closed: { code: 1005, reason: "", wasClean: true },
  });
});

Deno.test(
  "close() completes promptly while reading is paused by backpressure",
  {
    // Regression (issue 2): while reading was paused by backpressure, the
    // peer's close reply was never read, so close() took the whole
    // closeTimeout and ended with 1006.
  },
  async () => {
    const gate = Promise.withResolvers<void>();
    const result = Promise.withResolvers<{ info: unknown; ms: number }>();
    await using server = serve(async (sock) => {
      await gate.promise;
      const start = performance.now();
      await sock.close(1000);
      result.resolve({
        info: await sock.closed,
        ms: performance.now() - start,
      });
    }, { maxQueuedBytes: 1000, closeTimeout: 3000 });
    const sock = await within(connect(urlOf(server)));
    const writes = [];
    for (let i = 0; i < 20; i++) writes.push(sock.write(new Uint8Array(500)));
    await within(Promise.all(writes));
    // Let the server read past maxQueuedBytes and pause.
    await sleep(50);
    gate.resolve();
    assert.deepEqual(await within(sock.read()), {
      type: "close",
      code: 1000,
      reason: "",
    });
    assert.deepEqual(await within(sock.closed), {
      code: 1000,
      reason: "",
      wasClean: true,
    });
    const { info, ms } = await within(result.promise);
    assert.deepEqual(info, { code: 1000, reason: "", wasClean: true });
    assert.ok(ms < 1000, `server close() took ${ms} ms`);
  },
);

Deno.test("close() is idempotent: every call resolves", async () => {
  await using server = serve(drain);
  const sock = await within(connect(urlOf(server)));
  const first = sock.close(4000, "first");
  const second = sock.close(4001, "second");
  await within(Promise.all([first, second]));
  await within(sock.close());
  assert.deepEqual(await sock.closed, {
    code: 4000,
    reason: "",
    wasClean: true,
  });
});

Deno.test("close() rejects an invalid code or a reason over 123 bytes with a RangeError and the socket stays open", async () => {
  const seen = Promise.withResolvers<Message[]>();
  await using server = serve(async (sock) => {
    const messages: Message[] = [];
    for await (const msg of sock) {
      messages.push(msg);
      if (msg.type === "text") await sock.write(msg.data, "text");
    }
    seen.resolve(messages);
  });
  const sock = await within(connect(urlOf(server)));
  for (
    const code of [
      0,
      999,
      1004,
      1005,
      1006,
      1015,
      1016,
      2999,
      5000,
      1000.5,
      NaN,
    ]
  ) {
    await assert.rejects(sock.close(code), RangeError, `code ${code}`);
  }
  await assert.rejects(sock.close(1000, "x".repeat(124)), RangeError);
  // 62 two-byte characters: 124 bytes.
  await assert.rejects(sock.close(1000, "é".repeat(62)), RangeError);
  // 42 three-byte characters: 126 bytes; the first length past 41 units.
  await assert.rejects(sock.close(1000, "€".repeat(42)), RangeError);
  await sock.write("still open", "text");
  assert.deepEqual(await within(sock.read()), {
    type: "text",
    data: "still open",
  });
  const longest = "é".repeat(61) + "x";
  await within(sock.close(3000, longest));
  assert.deepEqual(await within(seen.promise), [
    { type: "text", data: "still open" },
    { type: "close", code: 3000, reason: longest },
  ]);
});

Deno.test("closed never rejects, however the connection ends", async () => {
  await using server = serve((sock) => {
    // A protocol violation from our side is impossible through the API,
    // so end one connection each way: normal, error and drop.
    const kind = new URL(sock.request.url).pathname;
    if (kind === "/throw") throw new Error("handler failed");
    if (kind === "/drop") sock.conn.close();
  }, { onError() {} });
  for (const path of ["/normal", "/throw", "/drop"]) {
    const sock = await within(connect(urlOf(server, path)));
    const info = await within(sock.closed);
    assert.equal(typeof info.code, "number", path);
    assert.equal(typeof info.wasClean, "boolean", path);
    await within(sock.close());
  }
});

Deno.test("an abrupt drop ends read() with a 1006 close message, then null", async () => {
  const errors: unknown[] = [];
  await using server = serve((sock) => sock.conn.close(), {
    onError: (e) => errors.push(e),
  });
  const sock = await within(connect(urlOf(server)));
  assert.deepEqual(await within(sock.read()), {
    type: "close",
    code: 1006,
    reason: "",
  });
  assert.equal(await within(sock.read()), null);
  assert.deepEqual(await within(sock.closed), {
    code: 1006,
    reason: "",
    wasClean: false,
  });
  await assert.rejects(
    sock.write("late", "text"),
    (e) => isSocketClosed(e) && (e as WebSocketError).closeCode === 1006,
  );
  await within(sock.close());
  await waitFor(
    () => server.connections === 0,
    "the server to forget the socket",
  );
  assert.deepEqual(errors, []);
});

Deno.test("closeTimeout bounds the wait for a peer that never answers the close", async () => {
  using time = new FakeTime();
  await using raw = new RawServer();
  const { sock, peer } = await connectToRaw(raw, { closeTimeout: 200 });
  const start = performance.now();
  const closing = sock.close(4000, "anyone?");
  const close = await within(peer.readClose());
  assert.equal(close?.code, 4000);
  assert.equal(close?.frame.masked, true);
  const info = await time.tickUntil(sock.closed);
  const elapsed = performance.now() - start;
  assert.equal(info.code, 1006);
  assert.equal(info.wasClean, false);
  assert.ok(
    elapsed >= 150 && elapsed < 2000,
    `closed settled after ${elapsed} ms`,
  );
  await within(closing);
  // The client closed TCP.
  await within(peer.readToEnd());
  assert.deepEqual(await sock.read(), {
    type: "close",
    code: 1006,
    reason: info.reason,
  });
  assert.equal(await sock.read(), null);
});

for (const size of [40_000, 300_000]) {
  Deno.test(`a ${size} B frame that trickles in over many small reads, with pauses, arrives intact`, async () => {
    // The payload's buffer grows with what arrives (not to the declared
    // length at once), by copies and by direct reads: every path between
    // them is taken when the peer sends in small, uneven, paused pieces.
    const got = Promise.withResolvers<Uint8Array>();
    await using server = serve(async (sock) => {
      const msg = await sock.read();
      if (msg?.type === "binary") got.resolve(msg.data.slice());
      await drain(sock);
    });
    await using client = await RawClient.upgrade(server.addr.port);
    client.conn.setNoDelay(true);
    const payload = new Uint8Array(size).map((_, i) => (i * 31 + 7) & 0xff);
    const bytes = clientFrame(0x2, payload);
    const pieces = [1, 700, 9000, 20_000, 3, 40_000];
    for (let at = 0, i = 0; at < bytes.length; i++) {
      const n = pieces[i % pieces.length];
      await client.send(bytes.subarray(at, at + n));
      at += n;
      if (i % 3 === 0) await sleep(2);
    }
    const data = await within(got.promise);
    assert.equal(data.length, size);
    assert.deepEqual(data, payload);
  });
}
