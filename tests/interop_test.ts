/**
 * Interoperability over real loopback sockets: our `listen` and `connect`
 * against Deno's built-in `WebSocket` (client and `Deno.upgradeWebSocket`
 * server), npm `ws` (client and `WebSocketServer`) and each other, plain
 * and over TLS. Every pairing runs the same cases in both directions; see
 * tests/_interop_peers.ts for the pairings.
 */

import assert from "node:assert/strict";
import { WebSocket as WsClient } from "ws";
import type { Message, Socket } from "../mod.ts";
import {
  CERT,
  clientFrame,
  KEY,
  RawClient,
  TIMEOUT,
  urlOf,
  within,
} from "./_helpers.ts";
import {
  type Capability,
  type Pair,
  type Pairing,
  PAIRINGS,
  type PairOptions,
  type PeerMessage,
  serveBounded,
  webPeer,
  wsPeer,
} from "./_interop_peers.ts";

const encoder = new TextEncoder();

const GREETING = "Hello, 世界!";
const EMOJI = "🦕👍🏽";
/** Every byte value once. */
const ALL_BYTES = Uint8Array.from({ length: 256 }, (_, i) => i);
/** 1 MiB whose bytes depend on their position, so a shifted or dropped chunk shows. */
const MEBIBYTE = Uint8Array.from(
  { length: 1024 * 1024 },
  (_, i) => (i * 31) & 255,
);
const FRAGMENT_SIZE = 1000;
/** 10 KB of binary: ten full 1000-byte frames and a short one. */
const FRAGMENTED_BINARY = Uint8Array.from(
  { length: 10 * 1024 },
  (_, i) => (i * 7 + 3) & 255,
);
/**
 * About 10 KB of text in 12-byte units ("ab" 2 + "世界" 6 + "🦕" 4): the
 * 1000-byte frame boundaries fall inside multi-byte characters.
 */
const FRAGMENTED_TEXT = "ab世界🦕".repeat(834);
const PING_DATA = encoder.encode("are you there?");

/** Asserts equal bytes, naming the first differing index (a 1 MiB diff is unreadable). */
function assertBytes(
  actual: Uint8Array,
  expected: Uint8Array,
  what: string,
): void {
  assert.ok(
    actual instanceof Uint8Array,
    `${what}: expected a Uint8Array, received ${
      Object.prototype.toString.call(actual)
    }`,
  );
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    if (actual[i] !== expected[i]) {
      assert.fail(
        `${what}: byte ${i} is ${actual[i]}, expected ${expected[i]}`,
      );
    }
  }
}

/**
 * Message `i` of the concurrency case: every third is text, the rest binary
 * of up to ~70 KB, so some go out in several 64 KiB fragments while other
 * writes are queued behind them.
 */
function mixedMessage(i: number): string | Uint8Array {
  if (i % 3 === 0) return `message ${i}: ${GREETING}`;
  return Uint8Array.from(
    { length: (i * 7919) % 70_000 },
    (_, j) => (i + j * 31) & 255,
  );
}

function kind(data: string | Uint8Array): "text" | "binary" {
  return typeof data === "string" ? "text" : "binary";
}

/** Asserts a received data message carries `expected` with the matching type. */
function assertSameData(
  actual: Message | PeerMessage | null,
  expected: string | Uint8Array,
  what: string,
): void {
  assert.equal(actual?.type, kind(expected), what);
  const data = (actual as { data: string | Uint8Array }).data;
  if (typeof expected === "string") assert.equal(data, expected, what);
  else assertBytes(data as Uint8Array, expected, what);
}

/** Our `write`, bounded. */
function write(
  sock: Socket,
  data: string | Uint8Array,
  type: "text" | "binary" | "ping",
): Promise<void> {
  return within(sock.write(data, type), "our write()");
}

/** Our next message, bounded. */
function read(sock: Socket): Promise<Message | null> {
  return within(sock.read(), "our read()");
}

async function expectPeerBinary(
  pair: Pair,
  expected: Uint8Array,
): Promise<void> {
  const msg = await pair.peer.next();
  assert.equal(msg.type, "binary");
  assertBytes(msg.data as Uint8Array, expected, "binary message at the peer");
}

async function expectOurBinary(
  sock: Socket,
  expected: Uint8Array,
): Promise<void> {
  const msg = await read(sock);
  assert.equal(msg?.type, "binary");
  assertBytes(
    (msg as { data: Uint8Array }).data,
    expected,
    "binary message at our socket",
  );
}

interface Case {
  name: string;
  options?: PairOptions;
  /** What the pair must be able to do; pairings that cannot are skipped. */
  needs?: Capability;
  /** Pairings (by name) where a known library bug makes this case fail: ignored, with the bug. */
  bugs?: Record<string, string>;
  run(pair: Pair): Promise<void>;
}

const CASES: Case[] = [
  // -- Text --
  {
    name: "our text with non-ASCII and an emoji reaches the peer intact",
    async run({ ours, peer }) {
      await write(ours, GREETING, "text");
      await write(ours, EMOJI, "text");
      assert.deepEqual(await peer.next(), { type: "text", data: GREETING });
      assert.deepEqual(await peer.next(), { type: "text", data: EMOJI });
    },
  },
  {
    name: "the peer's text with non-ASCII and an emoji reaches us intact",
    async run({ ours, peer }) {
      await peer.send(GREETING);
      await peer.send(EMOJI);
      assert.deepEqual(await read(ours), { type: "text", data: GREETING });
      assert.deepEqual(await read(ours), { type: "text", data: EMOJI });
    },
  },
  {
    name: "our empty text message reaches the peer as empty text",
    async run({ ours, peer }) {
      await write(ours, "", "text");
      assert.deepEqual(await peer.next(), { type: "text", data: "" });
    },
  },
  {
    name: "the peer's empty text message reaches us as empty text",
    async run({ ours, peer }) {
      await peer.send("");
      assert.deepEqual(await read(ours), { type: "text", data: "" });
    },
  },

  // -- Binary --
  {
    name: "our binary message with all 256 byte values reaches the peer intact",
    async run(pair) {
      await write(pair.ours, ALL_BYTES, "binary");
      await expectPeerBinary(pair, ALL_BYTES);
    },
  },
  {
    name:
      "the peer's binary message with all 256 byte values reaches us intact",
    async run({ ours, peer }) {
      await peer.send(ALL_BYTES);
      await expectOurBinary(ours, ALL_BYTES);
    },
  },
  {
    name: "our empty binary message reaches the peer as empty binary",
    async run(pair) {
      await write(pair.ours, new Uint8Array(0), "binary");
      await expectPeerBinary(pair, new Uint8Array(0));
    },
  },
  {
    name: "the peer's empty binary message reaches us as empty binary",
    async run({ ours, peer }) {
      await peer.send(new Uint8Array(0));
      await expectOurBinary(ours, new Uint8Array(0));
    },
  },
  {
    name: "our 1 MiB binary message reaches the peer byte for byte",
    async run(pair) {
      await write(pair.ours, MEBIBYTE, "binary");
      await expectPeerBinary(pair, MEBIBYTE);
    },
  },
  {
    name: "the peer's 1 MiB binary message reaches us byte for byte",
    async run({ ours, peer }) {
      await peer.send(MEBIBYTE);
      await expectOurBinary(ours, MEBIBYTE);
    },
  },

  // -- Fragmentation --
  {
    name:
      "our 10 KB binary message sent in 1000-byte fragments reaches the peer whole",
    options: { fragmentSize: FRAGMENT_SIZE },
    async run(pair) {
      await write(pair.ours, FRAGMENTED_BINARY, "binary");
      await expectPeerBinary(pair, FRAGMENTED_BINARY);
    },
  },
  {
    name:
      "our 10 KB text message fragmented inside UTF-8 sequences reaches the peer whole",
    options: { fragmentSize: FRAGMENT_SIZE },
    async run({ ours, peer }) {
      await write(ours, FRAGMENTED_TEXT, "text");
      assert.deepEqual(await peer.next(), {
        type: "text",
        data: FRAGMENTED_TEXT,
      });
    },
  },
  {
    name:
      "the peer's 10 KB binary message in 1000-byte fragments reaches us whole",
    options: { fragmentSize: FRAGMENT_SIZE },
    needs: "fragment",
    async run({ ours, peer }) {
      await peer.sendFragmented!(FRAGMENTED_BINARY, FRAGMENT_SIZE);
      await expectOurBinary(ours, FRAGMENTED_BINARY);
    },
  },
  {
    name:
      "the peer's 10 KB text message fragmented inside UTF-8 sequences reaches us whole",
    options: { fragmentSize: FRAGMENT_SIZE },
    needs: "fragment",
    async run({ ours, peer }) {
      await peer.sendFragmented!(FRAGMENTED_TEXT, FRAGMENT_SIZE);
      assert.deepEqual(await read(ours), {
        type: "text",
        data: FRAGMENTED_TEXT,
      });
    },
  },

  {
    name:
      "a ping the peer sends between two fragments is read before the message and answered",
    options: { fragmentSize: FRAGMENT_SIZE },
    needs: "interleave",
    async run({ ours, peer }) {
      const pong = peer.pingBetweenFragments!(
        FRAGMENTED_TEXT,
        FRAGMENT_SIZE,
        PING_DATA,
      );
      // RFC 6455 5.4: control frames may be injected in the middle of a fragmented message.
      assert.deepEqual(await read(ours), { type: "ping", data: PING_DATA });
      assert.deepEqual(await read(ours), {
        type: "text",
        data: FRAGMENTED_TEXT,
      });
      assertBytes(await pong, PING_DATA, "pong payload at the peer");
    },
  },

  // -- Ping and pong --
  {
    name:
      "our ping is answered by the peer's pong, which we read as a pong message",
    async run({ ours }) {
      await write(ours, PING_DATA, "ping");
      assert.deepEqual(await read(ours), { type: "pong", data: PING_DATA });
    },
  },
  {
    name:
      "the peer's ping is delivered to us and answered by our automatic pong",
    needs: "ping",
    async run({ ours, peer }) {
      const pong = peer.ping!(PING_DATA);
      assert.deepEqual(await read(ours), { type: "ping", data: PING_DATA });
      assertBytes(await pong, PING_DATA, "pong payload at the peer");
    },
  },

  // -- Close --
  {
    name:
      "the peer's close 4001 'bye' reaches read() and closed, then read() returns null",
    async run({ ours, peer }) {
      peer.close(4001, "bye");
      assert.deepEqual(await read(ours), {
        type: "close",
        code: 4001,
        reason: "bye",
      });
      assert.equal(await read(ours), null);
      assert.deepEqual(await within(ours.closed, "our closed"), {
        code: 4001,
        reason: "bye",
        wasClean: true,
      });
      // RFC 6455 5.5.1: the reply typically echoes the status code.
      assert.equal(
        (await within(peer.closed, "the peer's close")).code,
        4001,
      );
    },
  },
  {
    name: "our close 4002 'done' reaches the peer with its code and reason",
    async run({ ours, peer }) {
      await within(ours.close(4002, "done"), "our close()");
      assert.deepEqual(await within(peer.closed, "the peer's close"), {
        code: 4002,
        reason: "done",
      });
      const info = await within(ours.closed, "our closed");
      assert.equal(info.code, 4002, "the peer's reply echoes our code");
      assert.equal(info.wasClean, true);
      assert.equal((await read(ours))?.type, "close");
      assert.equal(await read(ours), null);
    },
  },

  // -- Both directions at once --
  {
    name:
      "100 messages of mixed types and sizes each way, sent at the same time, arrive whole and in order",
    async run({ ours, peer }) {
      const messages = Array.from({ length: 100 }, (_, i) => mixedMessage(i));
      const ourSends = Promise.all(messages.map((m) => ours.write(m, kind(m))));
      const peerSends = Promise.all(messages.map((m) => peer.send(m)));
      for (const [i, m] of messages.entries()) {
        assertSameData(await peer.next(), m, `message ${i} at the peer`);
      }
      for (const [i, m] of messages.entries()) {
        assertSameData(await read(ours), m, `message ${i} at our socket`);
      }
      await within(
        Promise.all([ourSends, peerSends]),
        "all sends to complete",
      );
    },
  },

  // -- Failing and ending the connection --
  {
    name:
      "the peer's close without a code reaches us as 1005 and our reply has no code either",
    needs: "closeWithoutCode",
    async run({ ours, peer }) {
      peer.close();
      assert.deepEqual(await read(ours), {
        type: "close",
        code: 1005,
        reason: "",
      });
      assert.equal(await read(ours), null);
      assert.deepEqual(await within(ours.closed, "our closed"), {
        code: 1005,
        reason: "",
        wasClean: true,
      });
      assert.equal(
        (await within(peer.closed, "the peer's close")).code,
        1005,
      );
    },
  },
  {
    name: "a peer that drops TCP without a close frame ends read() with 1006",
    needs: "drop",
    async run({ ours, peer }) {
      peer.drop!();
      const msg = await read(ours);
      assert.equal(msg?.type, "close");
      assert.equal((msg as { code: number }).code, 1006);
      assert.equal(await read(ours), null);
      const info = await within(ours.closed, "our closed");
      assert.equal(info.code, 1006);
      assert.equal(info.wasClean, false);
    },
  },
  {
    name:
      "invalid UTF-8 split across the peer's text fragments fails the connection with 1007, which the peer sees",
    needs: "invalidText",
    async run({ ours, peer }) {
      // "h" and the lead byte of a 3-byte sequence, then a byte that cannot continue it.
      await peer.sendTextBytes!([
        new Uint8Array([0x68, 0xe4]),
        new Uint8Array([0x28]),
      ]);
      const msg = await read(ours);
      assert.equal(msg?.type, "close");
      assert.equal((msg as { code: number }).code, 1007);
      assert.equal(await read(ours), null);
      const info = await within(ours.closed, "our closed");
      assert.equal(info.code, 1007);
      assert.equal(info.wasClean, false);
      assert.equal(
        (await within(peer.closed, "the peer's close")).code,
        1007,
      );
    },
  },
  {
    name:
      "a peer message over our maxMessageSize fails the connection with 1009, which the peer sees",
    options: { maxMessageSize: 1000 },
    // Regression (issue 2): a Deno client streaming a frame over the limit
    // saw code 0 instead of 1009, because our server closed TCP while the
    // payload was still arriving and the kernel answered with a reset.
    async run({ ours, peer }) {
      await peer.send(new Uint8Array(2000));
      const msg = await read(ours);
      assert.equal(msg?.type, "close");
      assert.equal((msg as { code: number }).code, 1009);
      assert.equal(await read(ours), null);
      assert.equal((await within(ours.closed, "our closed")).code, 1009);
      assert.equal(
        (await within(peer.closed, "the peer's close")).code,
        1009,
      );
    },
  },
  {
    name:
      "our Server.close() sends the peer 1001 Going Away and waits for its reply",
    needs: "ourServer",
    async run({ ours, peer, server }) {
      await within(server!.close(), "Server.close()");
      assert.deepEqual(await within(peer.closed, "the peer's close"), {
        code: 1001,
        reason: "Server shutting down",
      });
      const info = await within(ours.closed, "our closed");
      assert.equal(info.code, 1001);
      assert.equal(info.wasClean, true);
      assert.equal(server!.connections, 0);
    },
  },

  // -- Subprotocols --
  {
    name: "the client offers subprotocols a and b and both sides agree on b",
    options: { subprotocols: true },
    run({ ours, peer }) {
      assert.equal(ours.protocol, "b");
      assert.equal(peer.protocol, "b");
      return Promise.resolve();
    },
  },
];

const CANNOT: Record<Capability, string> = {
  ping: "the peer cannot send pings",
  fragment: "the peer cannot send fragmented messages",
  interleave: "the peer cannot send a ping between fragments",
  invalidText: "the peer cannot send invalid UTF-8 as text",
  closeWithoutCode: "the peer cannot send a close frame without a code",
  drop: "the peer cannot drop TCP without a close frame",
  ourServer: "our socket is not accepted by our listen server here",
};

function defineCases(pairing: Pairing): void {
  for (const c of CASES) {
    const skipped = c.needs !== undefined && !pairing.can.has(c.needs);
    const bug = c.bugs?.[pairing.name];
    const note = skipped
      ? ` (skipped: ${CANNOT[c.needs!]})`
      : bug
      ? ` (ignored, BUG: ${bug})`
      : "";
    Deno.test({
      name: `${pairing.name}: ${c.name}${note}`,
      ignore: skipped || bug !== undefined,
      async fn() {
        await using pair = await pairing.open(c.options);
        await c.run(pair);
      },
    });
  }
}

for (const pairing of PAIRINGS) defineCases(pairing);

// -- Handler errors --

/** Our server whose handler throws; resolves with what `onError` received. */
function throwingServer() {
  const reported = Promise.withResolvers<unknown>();
  const server = serveBounded(() => {
    throw new Error("boom");
  }, { onError: (error) => reported.resolve(error) });
  return { server, reported: reported.promise };
}

Deno.test("ws client → our server: a handler that throws closes the client with 1011 and reports the error", async () => {
  const { server, reported } = throwingServer();
  await using _server = server;
  const peer = wsPeer(new WsClient(urlOf(server)));
  try {
    await within(peer.opened, "the ws client to open");
    assert.deepEqual(await within(peer.closed, "the ws client's close"), {
      code: 1011,
      reason: "Internal error",
    });
    assert.equal(
      ((await within(reported, "onError")) as Error).message,
      "boom",
    );
  } finally {
    await peer.dispose();
  }
});

Deno.test("Deno WebSocket client → our server: a handler that throws closes the client with 1011", async () => {
  const { server, reported } = throwingServer();
  await using _server = server;
  const peer = webPeer(new WebSocket(urlOf(server)));
  try {
    await within(peer.opened, "the Deno WebSocket client to open");
    assert.deepEqual(await within(peer.closed, "the client's close"), {
      code: 1011,
      reason: "Internal error",
    });
    assert.equal(
      ((await within(reported, "onError")) as Error).message,
      "boom",
    );
  } finally {
    await peer.dispose();
  }
});

// -- Deno's built-in WebSocket client over TLS --

// Deno's WebSocket constructor takes no CA option, so the client runs in a
// subprocess started with `--cert tests/fixtures/localhost.crt`.

interface SubprocessReport {
  protocol: string;
  received: (string | number[] | { bytes: number; patternOk: boolean })[];
  close: { code: number; reason: string; wasClean: boolean };
}

/**
 * Runs `body` in `deno eval --cert localhost.crt` with `ws` (a built-in
 * WebSocket to `url` offering a and b) in scope; the script prints a
 * {@linkcode SubprocessReport} when the socket closes.
 */
async function runBuiltinTlsClient(
  url: string,
  body: string,
): Promise<SubprocessReport> {
  const script = `
const ws = new WebSocket(${JSON.stringify(url)}, ["a", "b"]);
ws.binaryType = "arraybuffer";
const received = [];
function record(data) {
  if (typeof data === "string") return received.push(data);
  const bytes = new Uint8Array(data);
  if (bytes.length <= 256) return received.push(Array.from(bytes));
  received.push({ bytes: bytes.length, patternOk: bytes.every((b, i) => b === ((i * 31) & 255)) });
}
ws.onerror = (event) => console.error("WebSocket error:", event.message);
ws.onclose = (event) => console.log(JSON.stringify({
  protocol: ws.protocol,
  received,
  close: { code: event.code, reason: event.reason, wasClean: event.wasClean },
}));
${body}`;
  const certPath =
    new URL("./fixtures/localhost.crt", import.meta.url).pathname;
  const output = await within(
    new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-config", "--cert", certPath, script],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
      // Kills the subprocess if it hangs, so the deadline leaves nothing running.
      signal: AbortSignal.timeout(TIMEOUT - 500),
    }).output(),
    "the Deno WebSocket subprocess",
  );
  const stdout = new TextDecoder().decode(output.stdout).trim();
  const stderr = new TextDecoder().decode(output.stderr).trim();
  assert.equal(output.code, 0, `subprocess failed: ${stderr}`);
  assert.ok(stdout !== "", `subprocess printed no report: ${stderr}`);
  return JSON.parse(stdout.split("\n").at(-1)!);
}

const TLS_SERVER = {
  tls: true,
  certs: [{ cert: CERT, key: KEY }],
  protocols: ["b"],
  closeTimeout: 2000,
};

Deno.test("Deno WebSocket client (subprocess, --cert) → our TLS server: text and binary go both ways and its close 4001 'bye' reaches us", async () => {
  const seen: Message[] = [];
  const accepted = Promise.withResolvers<Socket>();
  await using server = serveBounded(async (sock) => {
    accepted.resolve(sock);
    for await (const msg of sock) {
      seen.push(msg);
      if (msg.type === "text" || msg.type === "binary") {
        await sock.write(msg.data, msg.type);
      }
    }
  }, TLS_SERVER);
  const greeting = JSON.stringify(GREETING);
  const report = await runBuiltinTlsClient(
    urlOf(server, "/", true),
    `
ws.onopen = () => {
  ws.send(${greeting});
  ws.send(new Uint8Array(256).map((_, i) => i));
};
ws.onmessage = (event) => { record(event.data); if (received.length === 2) ws.close(4001, "bye"); };`,
  );
  const sock = await within(accepted.promise, "our server to accept");
  assert.equal(sock.protocol, "b");
  assert.deepEqual(report, {
    protocol: "b",
    received: [GREETING, Array.from(ALL_BYTES)],
    close: { code: 4001, reason: "", wasClean: true },
  });
  assert.deepEqual(await within(sock.closed, "our closed"), {
    code: 4001,
    reason: "bye",
    wasClean: true,
  });
  assert.deepEqual(seen, [
    { type: "text", data: GREETING },
    { type: "binary", data: ALL_BYTES },
    { type: "close", code: 4001, reason: "bye" },
  ]);
});

Deno.test("Deno WebSocket client (subprocess, --cert) → our TLS server: our text, 1 MiB and close 4002 'done' reach it", async () => {
  await using server = serveBounded(async (sock) => {
    await sock.write(`${GREETING} ${EMOJI}`, "text");
    await sock.write(MEBIBYTE, "binary");
    await sock.close(4002, "done");
  }, TLS_SERVER);
  const report = await runBuiltinTlsClient(
    urlOf(server, "/", true),
    `ws.onmessage = (event) => record(event.data);`,
  );
  assert.deepEqual(report, {
    protocol: "b",
    received: [`${GREETING} ${EMOJI}`, {
      bytes: MEBIBYTE.length,
      patternOk: true,
    }],
    close: { code: 4002, reason: "done", wasClean: true },
  });
});

// -- Failing a connection --

// Regression (issue 2): failing the connection reset TCP instead of closing
// it cleanly. A peer whose frame is rejected from its header (1009 here) is
// still sending the payload when the server closes; the payload then hit a
// closed socket, the kernel answered with a RST and the peer's close reply
// failed with Broken pipe. RFC 6455 7.1.1: "discarding any trailing bytes
// that may have been received."
Deno.test({
  name:
    "a server that fails a connection with 1009 mid-frame still lets the peer reply with its close frame",
  async fn() {
    await using server = serveBounded(async (sock) => {
      await sock.closed;
    }, { maxMessageSize: 1000, closeTimeout: 2000 });
    await using raw = await within(
      RawClient.upgrade(server.addr.port),
      "the raw client to upgrade",
    );
    const frame = clientFrame(0x2, new Uint8Array(2000));
    // The header (with the masking key) first, as a client streaming a large message would.
    await within(
      raw.send(frame.subarray(0, 8)),
      "the frame header to be written",
    );
    const close = await within(raw.readClose(), "our close frame");
    assert.equal(close?.code, 1009);
    await within(raw.send(frame.subarray(8)), "the payload to be written");
    // The peer answers the close frame, as RFC 6455 5.5.1 asks.
    await within(
      raw.send(clientFrame(0x8, new Uint8Array([0x03, 0xf1]))),
      "the close reply to be written",
    );
    assert.ok(await within(raw.closedByPeer(), "our server to close TCP"));
  },
});
