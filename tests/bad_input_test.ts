/**
 * What a peer can send that it should not: malformed upgrade requests and
 * responses, protocol violations after the upgrade, limits. Nothing here
 * may throw at the caller, hang, or leak (sanitizers are on).
 */

import assert from "node:assert/strict";
import zlib from "node:zlib";
import {
  type CloseInfo,
  connect,
  type ConnectOptions,
  type ListenOptions,
  type Message,
  type Socket,
  WebSocketError,
} from "../mod.ts";
import { acceptKey } from "../src/handshake.ts";
import { FakeTime } from "./_fake_time.ts";
import {
  clientFrame,
  closePayload,
  concat,
  connectToRaw,
  drain,
  echo,
  RawClient,
  type RawPeer,
  RawServer,
  readAll,
  serve,
  serverFrame,
  sleep,
  TEST_KEY,
  utf8,
  within,
} from "./_helpers.ts";

const decoder = new TextDecoder();

/** RFC 6455 1.3: the sample nonce. */
const SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ==";

/** An upgrade request head; `null` drops a header. */
function upgradeHead(
  overrides: Record<string, string | null> = {},
  requestLine = "GET / HTTP/1.1",
): string {
  const fields: Record<string, string | null> = {
    "Host": "127.0.0.1",
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": SAMPLE_KEY,
    "Sec-WebSocket-Version": "13",
    ...overrides,
  };
  let head = requestLine + "\r\n";
  for (const [name, value] of Object.entries(fields)) {
    if (value !== null) head += `${name}: ${value}\r\n`;
  }
  return head + "\r\n";
}

/**
 * Sends `request` to a fresh server and returns the response head and
 * body, once the server has closed the connection. The handler must not
 * run.
 */
async function respondTo(
  request: string | Uint8Array,
  options: Partial<ListenOptions> = {},
): Promise<{ head: string; body: string }> {
  let handled = 0;
  await using server = serve(() => {
    handled++;
  }, options);
  await using client = await within(RawClient.connect(server.addr.port));
  await client.send(request);
  const head = await within(client.readHead(), "the response head");
  // The server closes the connection after the response.
  const body = decoder.decode(
    await within(client.readToEnd(), "the server to close the connection"),
  );
  assert.equal(handled, 0, "the handler ran");
  assert.equal(server.connections, 0);
  return { head, body };
}

/** The status code of a response head. */
function statusOf(head: string): number {
  const match = /^HTTP\/1\.1 (\d{3}) /.exec(head);
  assert.ok(match, `not a response: ${JSON.stringify(head.slice(0, 80))}`);
  return Number(match[1]);
}

/**
 * Upgrades a raw client, sends `bytes`, and checks that the server answers
 * with a close frame carrying `code`, closes TCP, and that the handler's
 * read() ended with a close message carrying the same code.
 */
async function assertServerFails(
  code: number,
  bytes: Uint8Array,
  options: Partial<ListenOptions> = {},
): Promise<Message[]> {
  const handler = Promise.withResolvers<
    { messages: Message[]; closed: CloseInfo; after: Message | null }
  >();
  await using server = serve(async (sock) => {
    const messages = await readAll(sock);
    handler.resolve({
      messages,
      closed: await sock.closed,
      after: await sock.read(),
    });
  }, { onError: (e) => handler.reject(e), ...options });
  await using client = await within(RawClient.upgrade(server.addr.port));
  await client.send(bytes);
  const close = await within(client.readClose(), "the server's close frame");
  assert.equal(close?.code, code, `close frame ${JSON.stringify(close)}`);
  // After failing, the server sends its close frame then a FIN, and drains
  // until the peer closes (RFC 6455 7.1.1), as every real client does.
  assert.ok(await within(client.closedByPeer(), "the server's FIN"));
  client.close();
  const { messages, closed, after } = await within(
    handler.promise,
    "the handler",
  );
  const last = messages.at(-1);
  assert.equal(last?.type, "close");
  assert.equal((last as { code: number }).code, code);
  assert.equal(after, null);
  assert.equal(closed.code, code);
  assert.equal(closed.wasClean, false);
  return messages;
}

/** Sets bits of the first byte of a frame. */
function withFirstByte(frame: Uint8Array, bits: number): Uint8Array {
  const copy = frame.slice();
  copy[0] |= bits;
  return copy;
}

// -- Malformed upgrade requests --

Deno.test("a garbage request line gets 400 and the connection is closed", async () => {
  for (
    const request of [
      "HELLO\r\n\r\n",
      "GET /\r\n\r\n",
      "GET / HTTP/1.1 extra\r\n\r\n",
      "\x00\x01\x02\r\n\r\n",
    ]
  ) {
    const { head } = await respondTo(request);
    assert.equal(statusOf(head), 400, JSON.stringify(request));
  }
});

Deno.test("a plain GET without Upgrade gets 426", async () => {
  const { head } = await respondTo("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  assert.equal(statusOf(head), 426);
});

Deno.test("Sec-WebSocket-Version: 8 gets 426 with Sec-WebSocket-Version: 13", async () => {
  const { head } = await respondTo(
    upgradeHead({ "Sec-WebSocket-Version": "8" }),
  );
  assert.equal(statusOf(head), 426);
  assert.match(head, /\r\nSec-WebSocket-Version: 13\r\n/i);
});

Deno.test("a missing or malformed Sec-WebSocket-Key gets 400", async () => {
  for (const key of [null, "", "short", "dGhlIHNhbXBsZSBub25jZQ"]) {
    const { head } = await respondTo(upgradeHead({ "Sec-WebSocket-Key": key }));
    assert.equal(statusOf(head), 400, `key ${JSON.stringify(key)}`);
  }
});

Deno.test("an upgrade with POST, HTTP/1.0, no Host or no Connection: Upgrade gets 400", async () => {
  const requests = [
    upgradeHead({}, "POST / HTTP/1.1"),
    upgradeHead({}, "GET / HTTP/1.0"),
    upgradeHead({ "Host": null }),
    upgradeHead({ "Connection": "keep-alive" }),
  ];
  for (const request of requests) {
    const { head } = await respondTo(request);
    assert.equal(statusOf(head), 400, request.split("\r\n")[0]);
  }
});

Deno.test("a request head over 16 KiB gets 431", async () => {
  const request = upgradeHead({ "X-Big": "a".repeat(17 * 1024) });
  const { head } = await respondTo(request);
  assert.equal(statusOf(head), 431);
});

Deno.test("maxHandshakeSize sets the request head limit", async () => {
  const request = upgradeHead({ "X-Big": "a".repeat(600) });
  assert.equal(
    statusOf((await respondTo(request, { maxHandshakeSize: 512 })).head),
    431,
  );
});

Deno.test("handshakeTimeout drops a client that sends nothing", async () => {
  using time = new FakeTime();
  await using server = serve(() => {}, { handshakeTimeout: 200 });
  await using client = await within(RawClient.connect(server.addr.port));
  const start = performance.now();
  const rest = await time.tickUntil(client.readToEnd());
  const elapsed = performance.now() - start;
  assert.equal(rest.length, 0);
  assert.ok(elapsed >= 150 && elapsed < 2000, `dropped after ${elapsed} ms`);
});

Deno.test("handshakeTimeout drops a client that stops halfway through its request", async () => {
  using time = new FakeTime();
  await using server = serve(() => {}, { handshakeTimeout: 200 });
  await using client = await within(RawClient.connect(server.addr.port));
  await client.send("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr");
  const start = performance.now();
  await time.tickUntil(client.readToEnd());
  const elapsed = performance.now() - start;
  assert.ok(elapsed >= 150 && elapsed < 2000, `dropped after ${elapsed} ms`);
});

Deno.test("a client that hangs up during the handshake does not reach the handler", async () => {
  let handled = 0;
  await using server = serve(() => {
    handled++;
  });
  const client = await within(RawClient.connect(server.addr.port));
  await client.send("GET / HTTP/1.1\r\n");
  client.close();
  // The server still serves the next client.
  await using next = await within(RawClient.upgrade(server.addr.port));
  assert.deepEqual(await within(next.readClose()), { code: 1000, reason: "" });
  await next.send(clientFrame(0x8, closePayload(1000)));
  assert.equal(await within(next.closedByPeer()), true);
  assert.equal(handled, 1);
});

// -- Requests that cannot be HTTP/1.x --
// Hardening II: bytes that no request line may contain used to be held
// until the handshake timeout (1,000 connections of random bytes, 1,000
// descriptors for 10 s). They get 400 at the first read that proves them.

/**
 * Sends `request` to a server whose handshake timeout is 10 s, keeps the
 * connection open, and checks that a 400 comes back within a second,
 * followed by the server's FIN.
 */
async function assertRefusedAtOnce(
  request: string | Uint8Array,
): Promise<void> {
  let handled = 0;
  await using server = serve(() => {
    handled++;
  }, { handshakeTimeout: 10_000 });
  await using client = await within(RawClient.connect(server.addr.port));
  const start = performance.now();
  await client.send(request);
  const head = await within(client.readHead(), "the response head", 1000);
  const elapsed = performance.now() - start;
  const what = JSON.stringify(
    typeof request === "string" ? request.slice(0, 40) : request.slice(0, 8),
  );
  assert.equal(statusOf(head), 400, `${what}: ${head}`);
  assert.ok(elapsed < 1000, `${what}: answered after ${elapsed} ms`);
  // Then EOF, while the client still holds its end open.
  await within(client.readToEnd(), "the server's FIN", 2000);
  assert.equal(handled, 0);
}

/** Seeded bytes (a linear congruential generator), for repeatable garbage. */
function seededBytes(seed: number, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let state = seed >>> 0;
  for (let i = 0; i < length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    bytes[i] = state >>> 24;
  }
  return bytes;
}

Deno.test("random bytes get 400 at once, not after the handshake timeout", async () => {
  for (let seed = 1; seed <= 20; seed++) {
    await assertRefusedAtOnce(seededBytes(seed, 1024 + seed * 150));
  }
});

Deno.test("the start of a TLS ClientHello sent to a plain server gets 400 at once", async () => {
  // A TLS record header: handshake (0x16), TLS 1.0 (0x03 0x01), then a
  // length; what a browser sends first to an https:// URL.
  await assertRefusedAtOnce(new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00]));
  await assertRefusedAtOnce(new Uint8Array([0x16, 0x03, 0x01]));
});

Deno.test("a NUL in the method gets 400 before the request line ends", async () => {
  await assertRefusedAtOnce("GE\x00T / HTTP/1.1");
});

Deno.test("a method that is not a token gets 400 at once", async () => {
  await assertRefusedAtOnce("G(T / HTTP/1.1\r\n");
});

Deno.test("an HTTP version other than 1.x gets 400 at once", async () => {
  await assertRefusedAtOnce("GET / HTTP/2.0\r\nHost: 127.0.0.1\r\n");
  await assertRefusedAtOnce("GET / HTTPS/1.1\r\n");
  await assertRefusedAtOnce("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
});

Deno.test("a byte over 0x7F or a control byte in the request target gets 400 at once", async () => {
  await assertRefusedAtOnce(utf8("GET /caf\u00e9 HTTP/1.1\r\n"));
  await assertRefusedAtOnce("GET /a\tb HTTP/1.1\r\n");
});

Deno.test("a request line of 20 KiB without CRLF gets 400 at once", async () => {
  await assertRefusedAtOnce("GET /" + "a".repeat(20 * 1024));
});

Deno.test("an upgrade request sent one byte at a time is accepted", async () => {
  await using server = serve((sock) => sock.close());
  await using client = await within(RawClient.connect(server.addr.port));
  client.conn.setNoDelay(true);
  const request = utf8(
    upgradeHead(
      { "Host": `127.0.0.1:${server.addr.port}` },
      "GET /a?b=c HTTP/1.1",
    ),
  );
  for (let i = 0; i < request.length; i++) {
    await client.send(request.subarray(i, i + 1));
    await sleep(1);
  }
  const head = await within(client.readHead());
  assert.equal(statusOf(head), 101, head);
  assert.deepEqual(await within(client.readClose()), {
    code: 1000,
    reason: "",
  });
  await client.send(clientFrame(0x8, closePayload(1000)));
  assert.ok(await within(client.closedByPeer()));
});

Deno.test("an upgrade with a long target and a long header is accepted", async () => {
  await using server = serve((sock) => sock.close());
  await using client = await within(RawClient.connect(server.addr.port));
  await client.send(
    upgradeHead(
      { "X-Long": "v".repeat(6 * 1024) },
      `GET /${"p".repeat(7 * 1024)} HTTP/1.1`,
    ),
  );
  const head = await within(client.readHead());
  assert.equal(statusOf(head), 101, head.slice(0, 80));
  assert.deepEqual(await within(client.readClose()), {
    code: 1000,
    reason: "",
  });
  await client.send(clientFrame(0x8, closePayload(1000)));
  assert.ok(await within(client.closedByPeer()));
});

// -- 5.1, 5.2 Framing violations from a client --

Deno.test("an unmasked client frame fails the connection with 1002", async () => {
  const unmasked = serverFrame(0x1, "hi");
  await assertServerFails(1002, unmasked);
});

Deno.test("RSV1, RSV2 or RSV3 without an extension fails the connection with 1002", async () => {
  await assertServerFails(1002, clientFrame(0x1, "hi", { rsv1: true }));
  await assertServerFails(1002, withFirstByte(clientFrame(0x1, "hi"), 0x20));
  await assertServerFails(1002, withFirstByte(clientFrame(0x1, "hi"), 0x10));
  await assertServerFails(1002, withFirstByte(clientFrame(0x9, "hi"), 0x40));
});

Deno.test("reserved opcodes 3 and 0xB fail the connection with 1002", async () => {
  for (const opcode of [0x3, 0x7, 0xb, 0xf]) {
    await assertServerFails(1002, clientFrame(opcode, "x"));
  }
});

Deno.test("a ping with a 126-byte payload fails the connection with 1002", async () => {
  // Header by hand: FIN + ping, MASK + 126 (16-bit length), length 126, key.
  const header = new Uint8Array([0x89, 0x80 | 126, 0x00, 126, ...TEST_KEY]);
  await assertServerFails(1002, concat(header, new Uint8Array(126)));
});

Deno.test("a fragmented ping fails the connection with 1002", async () => {
  await assertServerFails(1002, clientFrame(0x9, "p", { fin: false }));
});

Deno.test("a continuation frame with no message to continue fails the connection with 1002", async () => {
  await assertServerFails(1002, clientFrame(0x0, "x"));
  await assertServerFails(1002, clientFrame(0x0, "x", { fin: false }));
});

Deno.test("a new data message inside a fragmented one fails the connection with 1002", async () => {
  await assertServerFails(
    1002,
    concat(clientFrame(0x1, "a", { fin: false }), clientFrame(0x2, "b")),
  );
});

Deno.test("a 64-bit length with its most significant bit set fails the connection with 1002", async () => {
  const header = new Uint8Array([
    0x82,
    0x80 | 127,
    0x80,
    0,
    0,
    0,
    0,
    0,
    0,
    1,
    ...TEST_KEY,
  ]);
  await assertServerFails(1002, header);
});

Deno.test("a message before a violation is still delivered to the handler", async () => {
  const messages = await assertServerFails(
    1002,
    concat(clientFrame(0x1, "fine"), clientFrame(0x3)),
  );
  assert.deepEqual(messages[0], { type: "text", data: "fine" });
  assert.equal(messages.length, 2);
});

// -- 8.1 UTF-8 --

Deno.test("a text message that is not valid UTF-8 fails the connection with 1007", async () => {
  for (
    const bytes of [[0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [
      0x68,
      0x69,
      0xe2,
      0x82,
    ]]
  ) {
    await assertServerFails(1007, clientFrame(0x1, new Uint8Array(bytes)));
  }
});

Deno.test("invalid UTF-8 in a first fragment fails with 1007 before the final fragment is sent", async () => {
  // 0xF4 0x90 can never start a valid sequence (it would be above U+10FFFF).
  const messages = await assertServerFails(
    1007,
    clientFrame(0x1, new Uint8Array([0x68, 0xf4, 0x90]), { fin: false }),
  );
  assert.equal(messages.length, 1);
});

Deno.test("a text message that ends inside a UTF-8 sequence fails with 1007", async () => {
  await assertServerFails(
    1007,
    concat(
      clientFrame(0x1, new Uint8Array([0x68, 0xe2, 0x82]), { fin: false }),
      clientFrame(0x0, "", { fin: true }),
    ),
  );
});

// -- 8.1 UTF-8, in a frame still arriving --
// Hardening II: invalid UTF-8 inside a text frame was found only once the
// whole frame had come, however long the peer took to send the rest. The
// frame below arrives in three reads: valid text, a chunk with 0xFF, and
// the rest, which is never sent: the close must come before it.

const VALID_PREFIX = utf8("Grüße, 世界! ".repeat(4));
/** A text payload with 0xFF at `VALID_PREFIX.length`, then more text. */
const BROKEN_TEXT = concat(
  VALID_PREFIX,
  new Uint8Array([0xff]),
  utf8(" and more text after it"),
);

/** The bytes of `frame` before byte `invalidAt`, and that byte alone. */
function threeParts(
  frame: Uint8Array,
  invalidAt: number,
): [Uint8Array, Uint8Array] {
  return [
    frame.subarray(0, invalidAt),
    frame.subarray(invalidAt, invalidAt + 1),
  ];
}

/** Raw deflate of `bytes` as permessage-deflate sends it, in stored blocks. */
function storedDeflate(bytes: Uint8Array): Uint8Array {
  const out = zlib.deflateRawSync(bytes, {
    level: 0,
    finishFlush: zlib.constants.Z_SYNC_FLUSH,
  });
  // RFC 7692 7.2.1: the 0x00 0x00 0xff 0xff of the flush is not sent.
  return new Uint8Array(out.subarray(0, out.length - 4));
}

/**
 * Upgrades a raw client (with permessage-deflate if `extensions`), sends
 * `before`, then `invalid` and checks that the server's close frame with
 * 1007 comes within a second, while the rest of the frame is unsent.
 */
async function assertServerFailsMidFrame(
  before: Uint8Array,
  invalid: Uint8Array,
  extensions = "",
): Promise<void> {
  await using server = serve(drain, { compression: extensions !== "" });
  await using client = await within(
    RawClient.upgrade(server.addr.port, extensions),
  );
  await client.send(before);
  await sleep(30);
  await client.send(invalid);
  const close = await within(client.readClose(), "the close frame", 1000);
  assert.equal(close?.code, 1007, JSON.stringify(close));
}

Deno.test("invalid UTF-8 in a text frame still arriving fails with 1007 before the frame ends", async () => {
  const frame = clientFrame(0x1, BROKEN_TEXT);
  const [before, invalid] = threeParts(frame, 6 + VALID_PREFIX.length);
  await assertServerFailsMidFrame(before, invalid);
});

Deno.test("invalid UTF-8 in a continuation frame still arriving fails with 1007 before the frame ends", async () => {
  const first = clientFrame(0x1, "first fragment, ", { fin: false });
  const frame = clientFrame(0x0, BROKEN_TEXT);
  const [before, invalid] = threeParts(frame, 6 + VALID_PREFIX.length);
  await assertServerFailsMidFrame(concat(first, before), invalid);
});

Deno.test("a text frame still arriving that ends inside a character waits for the rest", async () => {
  // é is 0xC3 0xA9; each read below ends between the two bytes, where the
  // text is not invalid yet. 240 bytes: an 8-byte header with the mask.
  const text = "caf\u00e9 ".repeat(40);
  await using server = serve(echo);
  await using client = await within(RawClient.upgrade(server.addr.port));
  const frame = clientFrame(0x1, text);
  for (const [from, to] of [[0, 12], [12, 72], [72, frame.length]]) {
    await client.send(frame.subarray(from, to));
    await sleep(10);
  }
  const echoed = await within(client.readFrame());
  assert.equal(decoder.decode(echoed?.payload), text);
  await client.send(clientFrame(0x8, closePayload(1000)));
  assert.equal((await within(client.readClose()))?.code, 1000);
});

Deno.test("invalid UTF-8 in a compressed text frame still arriving fails with 1007 before the frame ends", async () => {
  const payload = storedDeflate(BROKEN_TEXT);
  const frame = clientFrame(0x1, payload, { rsv1: true });
  // A stored block: a 5-byte block header, then the bytes as they are.
  const [before, invalid] = threeParts(frame, 8 + 5 + VALID_PREFIX.length);
  await assertServerFailsMidFrame(
    before,
    invalid,
    "Sec-WebSocket-Extensions: permessage-deflate\r\n",
  );
});

/** The client's side of the above: a raw server sends the frame in parts. */
async function assertClientFailsMidFrame(
  before: Uint8Array,
  invalid: Uint8Array,
  compression = false,
): Promise<void> {
  await using raw = new RawServer();
  const { sock, peer } = await connectToRaw(
    raw,
    { compression },
    compression ? "Sec-WebSocket-Extensions: permessage-deflate\r\n" : "",
  );
  await peer.send(before);
  await sleep(30);
  await peer.send(invalid);
  const close = await within(peer.readClose(), "the close frame", 1000);
  assert.equal(close?.code, 1007, JSON.stringify(close));
  peer.close();
  const messages = await within(readAll(sock));
  assert.equal((messages.at(-1) as { code: number }).code, 1007);
}

Deno.test("invalid UTF-8 in a text frame still arriving fails the client's connection with 1007 before the frame ends", async () => {
  const frame = serverFrame(0x1, BROKEN_TEXT);
  await assertClientFailsMidFrame(
    ...threeParts(frame, 2 + VALID_PREFIX.length),
  );
});

Deno.test("invalid UTF-8 in a continuation frame still arriving fails the client's connection with 1007 before the frame ends", async () => {
  const first = serverFrame(0x1, "first fragment, ", { fin: false });
  const [before, invalid] = threeParts(
    serverFrame(0x0, BROKEN_TEXT),
    2 + VALID_PREFIX.length,
  );
  await assertClientFailsMidFrame(concat(first, before), invalid);
});

Deno.test("invalid UTF-8 in a compressed text frame still arriving fails the client's connection with 1007 before the frame ends", async () => {
  const frame = serverFrame(0x1, storedDeflate(BROKEN_TEXT), { rsv1: true });
  await assertClientFailsMidFrame(
    ...threeParts(frame, 4 + 5 + VALID_PREFIX.length),
    true,
  );
});

// -- 5.5.1 Close frames --

Deno.test("a close frame with a 1-byte payload fails the connection with 1002", async () => {
  await assertServerFails(1002, clientFrame(0x8, new Uint8Array([0x03])));
});

Deno.test("a close frame with a code that may not be sent fails the connection with 1002", async () => {
  for (const code of [999, 1004, 1005, 1006, 1015, 2999, 5000]) {
    await assertServerFails(1002, clientFrame(0x8, closePayload(code)));
  }
});

Deno.test("a close reason that is not valid UTF-8 fails the connection with 1007", async () => {
  await assertServerFails(
    1007,
    clientFrame(0x8, closePayload(1000, new Uint8Array([0x61, 0xff]))),
  );
});

// -- Limits --

Deno.test("a header declaring 2^40 bytes fails with 1009 before any payload is sent", async () => {
  // FIN + binary, MASK + 127, then 2^40 as a 64-bit length, then the key.
  const header = new Uint8Array([
    0x82,
    0x80 | 127,
    0,
    0,
    0x01,
    0,
    0,
    0,
    0,
    0,
    ...TEST_KEY,
  ]);
  await assertServerFails(1009, header);
});

Deno.test("a single frame over maxMessageSize fails with 1009", async () => {
  await assertServerFails(1009, clientFrame(0x2, new Uint8Array(1001)), {
    maxMessageSize: 1000,
  });
});

Deno.test("fragments that add up to more than maxMessageSize fail with 1009", async () => {
  const messages = await assertServerFails(
    1009,
    concat(
      clientFrame(0x2, new Uint8Array(600), { fin: false }),
      clientFrame(0x0, new Uint8Array(600), { fin: true }),
    ),
    { maxMessageSize: 1000 },
  );
  assert.equal(messages.length, 1);
});

Deno.test("a message of exactly maxMessageSize is accepted", async () => {
  const seen = Promise.withResolvers<Message[]>();
  await using server = serve(
    async (sock) => seen.resolve(await readAll(sock)),
    { maxMessageSize: 1000 },
  );
  await using client = await within(RawClient.upgrade(server.addr.port));
  await client.send(concat(
    clientFrame(0x2, new Uint8Array(500), { fin: false }),
    clientFrame(0x0, new Uint8Array(500), { fin: true }),
    clientFrame(0x8, closePayload(1000)),
  ));
  assert.deepEqual(await within(client.readClose()), {
    code: 1000,
    reason: "",
  });
  assert.deepEqual(await within(seen.promise), [
    { type: "binary", data: new Uint8Array(1000) },
    { type: "close", code: 1000, reason: "" },
  ]);
});

// -- Violations from a server, seen by our client --

/** Checks that our client failed the connection with `code`. */
async function assertClientFails(
  sock: Socket,
  peer: RawPeer,
  code: number,
): Promise<void> {
  const close = await within(peer.readClose(), "the client's close frame");
  assert.equal(close?.code, code);
  assert.equal(close?.frame.masked, true);
  // The client's close frame is followed by its FIN; it drains until the
  // server closes, as RFC 6455 7.1.1 has the server close first.
  await within(peer.readToEnd(), "the client's FIN");
  peer.close();
  const messages = await within(readAll(sock));
  assert.equal(messages.at(-1)?.type, "close");
  assert.equal((messages.at(-1) as { code: number }).code, code);
  assert.equal(await sock.read(), null);
  const closed = await within(sock.closed);
  assert.equal(closed.code, code);
  assert.equal(closed.wasClean, false);
}

Deno.test("a masked frame from the server fails the client's connection with 1002", async () => {
  await using raw = new RawServer();
  const { sock, peer } = await connectToRaw(raw);
  await peer.send(serverFrame(0x1, "hi", { maskingKey: TEST_KEY }));
  await assertClientFails(sock, peer, 1002);
});

Deno.test("RSV1 from the server fails the client's connection with 1002", async () => {
  await using raw = new RawServer();
  const { sock, peer } = await connectToRaw(raw);
  await peer.send(serverFrame(0x1, "hi", { rsv1: true }));
  await assertClientFails(sock, peer, 1002);
});

Deno.test("invalid UTF-8 from the server fails the client's connection with 1007", async () => {
  await using raw = new RawServer();
  const { sock, peer } = await connectToRaw(raw);
  await peer.send(serverFrame(0x1, new Uint8Array([0xff])));
  await assertClientFails(sock, peer, 1007);
});

Deno.test("a message over the client's maxMessageSize fails with 1009", async () => {
  await using raw = new RawServer();
  const { sock, peer } = await connectToRaw(raw, { maxMessageSize: 1000 });
  await peer.send(serverFrame(0x2, new Uint8Array(1001)));
  await assertClientFails(sock, peer, 1009);
});

Deno.test("bytes sent right after the 101 are the client's first message", async () => {
  await using raw = new RawServer();
  const accepted = raw.accept();
  const connecting = connect(raw.url());
  const peer = await within(accepted);
  const head = await within(peer.readHead());
  const key = /^sec-websocket-key:\s*(\S+)/im.exec(head)![1];
  await peer.send(concat(
    utf8(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${await acceptKey(key)}\r\n\r\n`,
    ),
    serverFrame(0x1, "early"),
    serverFrame(0x8, closePayload(1000)),
  ));
  const sock = await within(connecting);
  assert.deepEqual(await within(readAll(sock)), [
    { type: "text", data: "early" },
    { type: "close", code: 1000, reason: "" },
  ]);
  assert.equal((await within(peer.readClose()))?.code, 1000);
  await within(peer.readToEnd());
  assert.deepEqual(await within(sock.closed), {
    code: 1000,
    reason: "",
    wasClean: true,
  });
});

// -- Bad handshake responses, seen by connect() --

/**
 * Connects to a raw server that answers with `respond`; returns what
 * connect() rejected with, once the client has closed the connection.
 */
async function connectError(
  respond: (peer: RawPeer) => Promise<void>,
  options: ConnectOptions = {},
): Promise<unknown> {
  await using raw = new RawServer();
  const accepted = raw.accept();
  const result = connect(raw.url(), options).catch((error: unknown) => error);
  const peer = await within(accepted);
  await respond(peer);
  const error = await within(result, "connect() to settle");
  if (!(error instanceof Error)) {
    peer.close();
    await (error as Socket).closed;
    assert.fail("connect() resolved");
  }
  // The client closed the connection.
  await within(peer.readToEnd(), "the client to close the connection");
  return error;
}

function assertWebSocketError(
  error: unknown,
  code: string,
  message?: RegExp | string,
): void {
  assert.ok(error instanceof WebSocketError, `not a WebSocketError: ${error}`);
  assert.equal(error.code, code, error.message);
  if (typeof message === "string") {
    assert.ok(error.message.includes(message), error.message);
  } else if (message) assert.match(error.message, message);
}

Deno.test("connect() rejects a non-101 status with BAD_HANDSHAKE and the status line", async () => {
  const error = await connectError(async (peer) => {
    await peer.readHead();
    await peer.send("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
  });
  assertWebSocketError(error, "BAD_HANDSHAKE", "HTTP/1.1 403 Forbidden");
});

Deno.test("connect() rejects a wrong or missing Sec-WebSocket-Accept with BAD_HANDSHAKE", async () => {
  for (
    const accept of [
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n",
      "",
    ]
  ) {
    const error = await connectError(async (peer) => {
      await peer.readHead();
      await peer.send(
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n${accept}\r\n`,
      );
    });
    assertWebSocketError(error, "BAD_HANDSHAKE", /Sec-WebSocket-Accept/);
  }
});

Deno.test("connect() rejects a 101 without Upgrade: websocket with BAD_HANDSHAKE", async () => {
  const error = await connectError(async (peer) => {
    const head = await peer.readHead();
    const key = /^sec-websocket-key:\s*(\S+)/im.exec(head)![1];
    await peer.send(
      `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${await acceptKey(
        key,
      )}\r\n\r\n`,
    );
  });
  assertWebSocketError(error, "BAD_HANDSHAKE");
});

Deno.test("connect() rejects an unrequested subprotocol with BAD_HANDSHAKE", async () => {
  for (const protocols of [[], ["other"]]) {
    const error = await connectError(
      (peer) =>
        peer.acceptUpgrade("Sec-WebSocket-Protocol: chat\r\n").then(() => {}),
      { protocols },
    );
    assertWebSocketError(error, "BAD_HANDSHAKE", /subprotocol/);
  }
});

Deno.test("connect() rejects an unrequested extension with BAD_HANDSHAKE", async () => {
  const error = await connectError(
    (peer) =>
      peer.acceptUpgrade("Sec-WebSocket-Extensions: permessage-deflate\r\n")
        .then(() => {}),
  );
  assertWebSocketError(error, "BAD_HANDSHAKE", /extension/);
});

Deno.test("connect() rejects a server that hangs up before responding with BAD_HANDSHAKE", async () => {
  const error = await connectError(async (peer) => {
    await peer.readHead();
    peer.close();
  });
  assertWebSocketError(error, "BAD_HANDSHAKE");
});

Deno.test("connect() rejects a garbage response with BAD_HANDSHAKE", async () => {
  const error = await connectError(async (peer) => {
    await peer.readHead();
    await peer.send("SSH-2.0-OpenSSH\r\n\r\n");
  });
  assertWebSocketError(error, "BAD_HANDSHAKE");
});

Deno.test("connect() rejects a response head over maxHandshakeSize with BAD_HANDSHAKE", async () => {
  const error = await connectError(async (peer) => {
    await peer.readHead();
    await peer.send(
      `HTTP/1.1 101 Switching Protocols\r\nX-Big: ${"a".repeat(2000)}\r\n\r\n`,
    );
  }, { maxHandshakeSize: 1024 });
  assertWebSocketError(error, "BAD_HANDSHAKE");
});

Deno.test("a 101 response that arrives one byte at a time is accepted", async () => {
  await using raw = new RawServer();
  const accepted = raw.accept();
  const connecting = connect(raw.url());
  const peer = await within(accepted);
  const head = await within(peer.readHead());
  const key = /^sec-websocket-key:\s*(\S+)/im.exec(head)![1];
  const response = utf8(
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      `Sec-WebSocket-Accept: ${await acceptKey(key)}\r\n\r\n`,
  );
  peer.conn.setNoDelay(true);
  for (const byte of response) {
    await peer.send(new Uint8Array([byte]));
    await sleep(0);
  }
  const sock = await within(connecting);
  assert.equal(sock.response?.status, 101);
  peer.close();
  assert.equal((await within(sock.closed)).code, 1006);
});

Deno.test("a frame that arrives one byte at a time is decoded", async () => {
  const seen = Promise.withResolvers<Message[]>();
  await using server = serve(async (sock) => seen.resolve(await readAll(sock)));
  await using client = await within(RawClient.upgrade(server.addr.port));
  client.conn.setNoDelay(true);
  const bytes = concat(
    clientFrame(0x1, "hello"),
    clientFrame(0x2, new Uint8Array(300)),
    clientFrame(0x8, closePayload(1000)),
  );
  for (const byte of bytes) {
    await client.send(new Uint8Array([byte]));
    await sleep(0);
  }
  assert.deepEqual(await within(client.readClose()), {
    code: 1000,
    reason: "",
  });
  assert.deepEqual(await within(seen.promise), [
    { type: "text", data: "hello" },
    { type: "binary", data: new Uint8Array(300) },
    { type: "close", code: 1000, reason: "" },
  ]);
});

Deno.test("connect() rejects a URL that is not ws:// or wss:// with INVALID_URL", async () => {
  for (
    const url of [
      "http://x",
      "https://x/",
      "ftp://x",
      "not a url",
      "ws://x/#fragment",
    ]
  ) {
    const error = await connect(url).catch((e: unknown) => e);
    assertWebSocketError(error, "INVALID_URL");
  }
});

Deno.test("connect() rejects with HANDSHAKE_TIMEOUT when the server never answers", async () => {
  using time = new FakeTime();
  const start = performance.now();
  const error = await time.tickUntil(connectError(async (peer) => {
    await peer.readHead();
  }, { handshakeTimeout: 200 }));
  const elapsed = performance.now() - start;
  assertWebSocketError(error, "HANDSHAKE_TIMEOUT");
  assert.ok(elapsed >= 150 && elapsed < 2000, `rejected after ${elapsed} ms`);
});

Deno.test("connect() rejects with ABORTED when its signal is aborted", async () => {
  const controller = new AbortController();
  const error = await connectError(async (peer) => {
    await peer.readHead();
    controller.abort(new Error("changed my mind"));
  }, { signal: controller.signal });
  assertWebSocketError(error, "ABORTED");
});

Deno.test("connect() rejects with ABORTED when its signal was already aborted", async () => {
  const error = await connect(`ws://127.0.0.1:1/`, {
    signal: AbortSignal.abort(),
  }).catch((e: unknown) => e);
  assertWebSocketError(error, "ABORTED");
});

Deno.test("the handshake request our client sends is a valid upgrade", async () => {
  await using raw = new RawServer();
  const { sock, peer, request } = await connectToRaw(raw);
  const lines = request.split("\r\n");
  assert.equal(lines[0], "GET / HTTP/1.1");
  assert.match(
    request,
    new RegExp(`\\r\\nHost: 127\\.0\\.0\\.1:${raw.port}\\r\\n`, "i"),
  );
  assert.match(request, /\r\nUpgrade: websocket\r\n/i);
  assert.match(request, /\r\nConnection: Upgrade\r\n/i);
  assert.match(request, /\r\nSec-WebSocket-Version: 13\r\n/i);
  assert.match(request, /\r\nSec-WebSocket-Key: [A-Za-z0-9+/]{22}==\r\n/i);
  assert.ok(request.endsWith("\r\n\r\n"));
  peer.close();
  assert.equal((await within(sock.closed)).code, 1006);
});
