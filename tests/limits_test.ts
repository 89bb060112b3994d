/**
 * Limits and timeouts against hostile or broken peers, over real loopback
 * sockets: slowloris handshakes, heads that never end, declared lengths
 * that must not be allocated, maxFrameSize, the bound on a failed
 * connection's lingering, keepalive against frozen peers, and a write to
 * a peer that stops reading. What bad_input_test.ts and flow_test.ts
 * already cover (431 for a big head, a silent or stalled handshake, 2^40
 * lengths, maxMessageSize, a silent peer under keepalive, maxQueuedBytes,
 * maxBufferedAmount) is not repeated.
 */

import assert from "node:assert/strict";
import {
  type CloseInfo,
  connect,
  type ListenOptions,
  type Message,
  WebSocketError,
} from "../mod.ts";
import { FakeTime } from "./_fake_time.ts";
import {
  clientFrame,
  concat,
  connectToRaw,
  RawClient,
  RawServer,
  readAll,
  serve,
  sleep,
  TEST_KEY,
  upgradeRequest,
  urlOf,
  utf8,
  waitFor,
  within,
} from "./_helpers.ts";

const MIB = 1024 * 1024;

/** A masked binary frame header announcing `length` bytes (64-bit form). */
function header64(length: bigint, opcode = 0x2): Uint8Array {
  const bytes = new Uint8Array(14);
  bytes[0] = 0x80 | opcode;
  bytes[1] = 0x80 | 127;
  new DataView(bytes.buffer).setBigUint64(2, length);
  bytes.set(TEST_KEY, 10);
  return bytes;
}

/**
 * Upgrades a raw client, sends `bytes`, and returns the close frame the
 * server answered with and what the handler read, once the server closed
 * TCP.
 */
async function serverAnswer(
  bytes: Uint8Array,
  options: Partial<ListenOptions> = {},
): Promise<
  {
    close: { code: number; reason: string } | null;
    messages: Message[];
    closed: CloseInfo;
  }
> {
  const seen = Promise.withResolvers<
    { messages: Message[]; closed: CloseInfo }
  >();
  await using server = serve(async (sock) => {
    const messages = await readAll(sock);
    seen.resolve({ messages, closed: await sock.closed });
  }, { onError: (e) => seen.reject(e), ...options });
  await using client = await within(RawClient.upgrade(server.addr.port));
  await client.send(bytes);
  const close = await within(client.readClose(), "the server's close frame");
  await within(client.closedByPeer(), "the server's FIN");
  client.close();
  return { close, ...await within(seen.promise, "the handler") };
}

// -- Handshake --

Deno.test("handshakeTimeout drops a slowloris client that sends one header byte every 100 ms", async () => {
  using time = new FakeTime();
  let handled = 0;
  await using server = serve(() => {
    handled++;
  }, { handshakeTimeout: 300 });
  await using client = await within(RawClient.connect(server.addr.port));
  client.conn.setNoDelay(true);
  const request = utf8(upgradeRequest(server.addr.port));
  const start = performance.now();
  let done = false;
  const dropped = client.readToEnd().then((rest) => {
    done = true;
    return { rest, elapsed: performance.now() - start };
  });
  let sent = 0;
  while (!done && sent < request.length) {
    try {
      await client.send(request.subarray(sent, sent + 1));
    } catch {
      break; // Reset: the server is gone.
    }
    sent++;
    await time.tickAsync(100);
  }
  const { rest, elapsed } = await within(dropped);
  // Dropped at the deadline although bytes kept coming: the timeout is on
  // the whole request, not on silence between bytes.
  assert.ok(elapsed >= 250 && elapsed < 1500, `dropped after ${elapsed} ms`);
  assert.ok(sent < request.length / 4, `sent ${sent} of ${request.length}`);
  assert.equal(rest.length, 0, "the server answered something");
  assert.equal(handled, 0);
});

Deno.test("50 slowloris clients do not keep a well-behaved client from being served, and all are dropped", async () => {
  using time = new FakeTime();
  await using server = serve(async (sock) => {
    for await (const msg of sock) {
      if (msg.type === "text") await sock.write(msg.data, "text");
    }
  }, { handshakeTimeout: 400 });
  const port = server.addr.port;
  const request = utf8(upgradeRequest(port));
  const start = performance.now();
  const slow = await Promise.all(
    Array.from({ length: 50 }, () => within(RawClient.connect(port))),
  );
  // Each sends a byte, then waits for the clock, which moves 100 ms once
  // every one still trickling has sent its byte.
  let trickling = slow.length;
  let waiting = 0;
  const trickles = slow.map(async (client) => {
    let done = false;
    const dropped = client.readToEnd().then(() => {
      done = true;
      return performance.now() - start;
    });
    for (let sent = 0; !done && sent < request.length; sent++) {
      try {
        await client.send(request.subarray(sent, sent + 1));
      } catch {
        break;
      }
      waiting++;
      await time.sleep(100);
      waiting--;
    }
    trickling--;
    const elapsed = await dropped;
    client.close();
    return elapsed;
  });
  const clock = (async () => {
    while (trickling > 0) {
      await waitFor(() => waiting === trickling, "every slowloris byte");
      await time.tickAsync(100);
    }
  })();
  // Meanwhile a real client connects, talks and leaves.
  const sock = await within(connect(urlOf(server)));
  await sock.write("still serving", "text");
  assert.deepEqual(await within(sock.read()), {
    type: "text",
    data: "still serving",
  });
  await within(sock.close());
  const elapsed = await within(Promise.all(trickles), "the slowloris drops");
  await within(clock, "the clock to stop");
  for (const ms of elapsed) {
    assert.ok(ms >= 350 && ms < 3000, `a slowloris was dropped after ${ms} ms`);
  }
  assert.equal(server.connections, 0);
});

Deno.test("a request head that never ends gets 431 once maxHandshakeSize bytes came, not when the client stops", async () => {
  let handled = 0;
  await using server = serve(() => {
    handled++;
  }, { maxHandshakeSize: 4096 });
  await using client = await within(RawClient.connect(server.addr.port));
  // 12 KiB of header lines and no blank line; the client keeps the
  // connection open and waits.
  let head = "GET / HTTP/1.1\r\nHost: x\r\n";
  while (head.length < 12 * 1024) {
    head += `X-Pad-${head.length}: ${"a".repeat(60)}\r\n`;
  }
  await client.send(head);
  const response = await within(client.readHead(), "the 431 response");
  assert.match(response, /^HTTP\/1\.1 431 /);
  await within(client.readToEnd(), "the server to close");
  assert.equal(handled, 0);
});

// -- Declared lengths --

Deno.test("a header declaring 2^63 - 1 bytes fails with 1009, and 2^63 with 1002, before any payload", async () => {
  const before = Deno.memoryUsage().external;
  const big = await serverAnswer(header64(2n ** 63n - 1n));
  assert.equal(big.close?.code, 1009);
  assert.equal(big.closed.code, 1009);
  assert.match(big.close!.reason, /too big/i);
  // RFC 6455 5.2: the most significant bit of a 64-bit length MUST be 0.
  const top = await serverAnswer(header64(2n ** 63n));
  assert.equal(top.close?.code, 1002);
  assert.equal(top.closed.code, 1002);
  const grown = Deno.memoryUsage().external - before;
  assert.ok(grown < 64 * MIB, `external memory grew by ${grown} bytes`);
});

Deno.test("declared lengths are not allocated up front: 64 peers each announcing 16 MiB and sending 4 KiB hold far less than 1 GiB", async () => {
  const peers = 64;
  await using server = serve(async (sock) => {
    await readAll(sock);
  }, { closeTimeout: 200 });
  const clients = await Promise.all(
    Array.from(
      { length: peers },
      () => within(RawClient.upgrade(server.addr.port)),
    ),
  );
  await waitFor(() => server.connections === peers, "every upgrade");
  const before = Deno.memoryUsage().external;
  // 16 MiB is the default maxMessageSize: accepted, so the server buffers
  // what arrives and waits for the rest.
  const start = concat(header64(BigInt(16 * MIB)), new Uint8Array(4096));
  await Promise.all(clients.map((client) => client.send(start)));
  await sleep(200);
  const grown = Deno.memoryUsage().external - before;
  // Allocating the declared length would take 64 × 16 MiB = 1 GiB. What
  // frame.ts documents is at most max(1 MiB, 4 × the bytes received) per
  // frame: 64 MiB here; 2 MiB per peer leaves room for read buffers.
  assert.ok(
    grown <= peers * 2 * MIB,
    `external memory grew by ${(grown / MIB).toFixed(1)} MiB`,
  );
  for (const client of clients) client.close();
  await waitFor(() => server.connections === 0, "the server to drop them");
});

// -- maxFrameSize --

Deno.test("maxFrameSize below maxMessageSize fails a bigger frame with 1009 although the message would fit", async () => {
  const { close, messages } = await serverAnswer(
    clientFrame(0x2, new Uint8Array(1001)),
    { maxFrameSize: 1000, maxMessageSize: 5000 },
  );
  assert.equal(close?.code, 1009);
  assert.equal(messages.length, 1);
});

Deno.test("fragments each within maxFrameSize make a message up to maxMessageSize", async () => {
  const frames = [];
  for (let i = 0; i < 5; i++) {
    frames.push(
      clientFrame(i === 0 ? 0x2 : 0x0, new Uint8Array(1000).fill(i), {
        fin: i === 4,
      }),
    );
  }
  frames.push(clientFrame(0x8, new Uint8Array([0x03, 0xe8])));
  const { close, messages } = await serverAnswer(concat(...frames), {
    maxFrameSize: 1000,
    maxMessageSize: 5000,
  });
  assert.equal(close?.code, 1000);
  const message = messages[0];
  assert.equal(message.type, "binary");
  assert.equal((message as { data: Uint8Array }).data.length, 5000);
  assert.equal((message as { data: Uint8Array }).data[4999], 4);
});

// -- closeTimeout --

Deno.test("after failing a connection, the server stops discarding a peer that keeps sending at closeTimeout", async () => {
  using time = new FakeTime();
  const ended = Promise.withResolvers<{ closed: CloseInfo; at: number }>();
  await using server = serve(async (sock) => {
    await readAll(sock);
    ended.resolve({ closed: await sock.closed, at: performance.now() });
  }, { closeTimeout: 300 });
  await using client = await within(RawClient.upgrade(server.addr.port));
  const start = performance.now();
  await client.send(clientFrame(0x3)); // reserved opcode: 1002
  // The peer never closes: it keeps sending data frames every 20 ms
  // (RFC 6455 7.1.1 has the server discard them while it waits).
  let writeFailed = false;
  const writer = (async () => {
    for (let i = 0; i < 200 && !writeFailed; i++) {
      try {
        await client.send(clientFrame(0x2, new Uint8Array(512)));
      } catch {
        writeFailed = true;
      }
      await time.tickAsync(20);
    }
  })();
  const { closed, at } = await within(ended.promise, "the handler to end");
  const elapsed = at - start;
  assert.equal(closed.code, 1002);
  assert.ok(elapsed >= 250 && elapsed < 2000, `closed after ${elapsed} ms`);
  // Once the server closed for good, the peer's writes fail (reset).
  await within(writer, "the peer's writes to fail");
  assert.ok(writeFailed, "the server still accepted bytes");
  assert.equal(server.connections, 0);
});

// -- Keepalive --

Deno.test("our client with pingInterval drops a server that stops answering (half-open) with 1006 and frees it", async () => {
  using time = new FakeTime();
  await using raw = new RawServer();
  const { sock, peer } = await connectToRaw(raw, {
    pingInterval: 50,
    pongTimeout: 100,
  });
  // The raw server is alive at the TCP level but never reads or answers.
  const reading = readAll(sock);
  await time.tickAsync(50 + 100 + 25);
  const messages = await within(reading);
  assert.equal(messages.length, 1);
  assert.equal(messages[0].type, "close");
  assert.equal((messages[0] as { code: number }).code, 1006);
  assert.match((messages[0] as { reason: string }).reason, /Keepalive/);
  const info = await within(sock.closed);
  assert.equal(info.code, 1006);
  assert.equal(info.wasClean, false);
  await assert.rejects(
    sock.write("anyone?", "text"),
    (e) => e instanceof WebSocketError && e.code === "SOCKET_CLOSED",
  );
  // The client closed TCP: the raw server reads its pings, then EOF.
  const sent = await within(peer.readToEnd());
  assert.ok(sent.length >= 2 && sent[0] === 0x89, "no ping was sent");
});

Deno.test("keepalive drops a frozen peer even while a write to it is stuck", async () => {
  using time = new FakeTime();
  const outcome = Promise.withResolvers<
    { error: unknown; closed: CloseInfo; last: Message | null }
  >();
  await using server = serve(async (sock) => {
    let error: unknown = null;
    // 32 MiB cannot fit in loopback buffers: the write stays pending, and
    // the ping is queued behind it.
    sock.write(new Uint8Array(32 * MIB));
    await sock.flush().catch((e) => error = e);
    let last: Message | null = null;
    for await (const msg of sock) last = msg;
    outcome.resolve({ error, closed: await sock.closed, last });
  }, { pingInterval: 100, pongTimeout: 200 });
  // Upgrades, then neither reads nor writes.
  await using _client = await within(RawClient.upgrade(server.addr.port));
  await time.tickAsync(100 + 200 + 50);
  const { error, closed, last } = await within(outcome.promise);
  assert.ok(error instanceof Error, `the flush did not reject: ${error}`);
  assert.equal(closed.code, 1006);
  assert.match(closed.reason, /Keepalive/);
  assert.deepEqual(last, { type: "close", code: 1006, reason: closed.reason });
  await waitFor(() => server.connections === 0, "the server to forget it");
});

// Regression (issue 4), fixed: keepalive drops a live peer when the server itself stops reading.
// Input: server { pingInterval: 50, pongTimeout: 150, maxQueuedBytes: 64 KiB },
// a handler that is busy for 800 ms before reading, and our own client
// (which answers every ping) sending 64 messages of 16 KiB. Expected: the
// handler then reads all 64 messages. Actual: after ~7 messages it reads
// { type: "close", code: 1006, reason: "Keepalive timeout: no pong within
// 150 ms" }: the pongs sit unread in the server's own TCP buffer while
// backpressure paused the read loop (src/socket.ts #readLoop awaiting
// queue.drained()), and #keepalive()'s pong timer keeps running. The pong
// deadline should not run while this side is not reading.
Deno.test({
  name: "keepalive does not drop a live peer while backpressure pauses reading",
  async fn() {
    using time = new FakeTime();
    const got = Promise.withResolvers<Message[]>();
    await using server = serve(async (sock) => {
      await time.sleep(800); // Busy elsewhere: not reading.
      const messages: Message[] = [];
      let binary = 0;
      for await (const msg of sock) {
        messages.push(msg);
        if (msg.type === "binary" && ++binary === 64) break;
      }
      got.resolve(messages);
    }, { pingInterval: 50, pongTimeout: 150, maxQueuedBytes: 64 * 1024 });
    const sock = await within(connect(urlOf(server)));
    const reader = readAll(sock);
    for (let i = 0; i < 64; i++) {
      sock.write(new Uint8Array(16 * 1024)).catch(() => {});
    }
    await time.tickAsync(1000);
    const messages = await within(got.promise);
    assert.equal(messages.filter((m) => m.type === "binary").length, 64);
    assert.notEqual(messages.at(-1)?.type, "close");
    await within(sock.close());
    await within(reader);
  },
});

// -- Write side --

Deno.test("a write to a peer that stops reading stays pending with an accurate bufferedAmount, and resolves once it reads", async () => {
  // 16 MiB: more than loopback socket buffers hold for a peer that does
  // not read (4 MiB send buffer, receive window not grown without reads).
  const size = 16 * MIB;
  const wire = size + (size / (64 * 1024)) * 10; // 64 KiB fragments, 10-byte headers
  const progress = {
    start: Promise.withResolvers<void>(),
    pending: Promise.withResolvers<void>(),
    written: Promise.withResolvers<void>(),
  };
  let buffered = -1;
  let resolved = false;
  await using server = serve(async (sock) => {
    // Not before the raw client has read the 101 (and nothing more).
    await progress.start.promise;
    const write = sock.write(new Uint8Array(size)).then(() => {
      resolved = true;
    });
    buffered = sock.bufferedAmount;
    progress.pending.resolve();
    await write;
    buffered = sock.bufferedAmount;
    progress.written.resolve();
    await readAll(sock);
  });
  await using client = await within(RawClient.upgrade(server.addr.port));
  progress.start.resolve();
  await within(progress.pending.promise);
  // Every fragment accepted, none taken by the OS yet.
  assert.equal(buffered, wire);
  await sleep(200);
  assert.equal(resolved, false, "write() resolved before the peer read");
  // Now read it all: the write resolves and nothing stays buffered.
  const chunk = new Uint8Array(256 * 1024);
  let received = 0;
  while (received < wire) {
    const n = await within(client.conn.read(chunk), "the 16 MiB message");
    assert.ok(n !== null, `EOF after ${received} bytes`);
    received += n;
  }
  assert.equal(received, wire);
  await within(progress.written.promise);
  assert.equal(buffered, 0);
  await client.send(clientFrame(0x8, new Uint8Array([0x03, 0xe8])));
  assert.equal((await within(client.readClose()))?.code, 1000);
});
