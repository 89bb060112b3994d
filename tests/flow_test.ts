/**
 * Keepalive and backpressure, over real loopback sockets.
 */

import assert from "node:assert/strict";
import { connect, type Message } from "../mod.ts";
import { FakeTime } from "./_fake_time.ts";
import {
  clientFrame,
  RawClient,
  serve,
  sleep,
  urlOf,
  waitFor,
  within,
} from "./_helpers.ts";

// -- Keepalive --

Deno.test("a server with pingInterval drops a peer that never answers pings with 1006", async () => {
  using time = new FakeTime();
  const ended = Promise.withResolvers<Message | null>();
  await using server = serve(async (sock) => {
    let last: Message | null = null;
    for await (const msg of sock) last = msg;
    ended.resolve(last);
  }, { pingInterval: 50, pongTimeout: 100 });
  await using raw = await RawClient.upgrade(server.addr.port);
  // The raw client reads the pings but never answers them.
  const reading = raw.readFrame();
  await time.tickAsync(50);
  const ping = await within(reading);
  assert.equal(ping?.opcode, 0x9);
  await time.tickAsync(100);
  const last = await within(ended.promise);
  assert.equal(last?.type, "close");
  assert.equal((last as { code: number }).code, 1006);
  assert.match((last as { reason: string }).reason, /Keepalive timeout/);
  assert.ok(await within(raw.closedByPeer()));
});

Deno.test("a server with pingInterval keeps a peer that answers pings", async () => {
  using time = new FakeTime();
  let pings = 0;
  let pongs = 0;
  await using server = serve(async (sock) => {
    for await (const msg of sock) {
      if (msg.type === "pong") pongs++;
      if (msg.type === "text") await sock.write(msg.data, "text");
    }
  }, { pingInterval: 30, pongTimeout: 200 });
  const sock = await connect(urlOf(server));
  const reader = (async () => {
    for await (const msg of sock) {
      if (msg.type === "ping") pings++;
      if (msg.type === "text") return msg.data;
    }
  })();
  // 400 ms, each pong back at the server before the clock moves on.
  for (let ms = 0; ms < 400; ms += 20) {
    await time.tickAsync(20);
    await waitFor(() => pongs === pings, "the pong to each ping");
  }
  await sock.write("still here", "text");
  assert.equal(await within(reader), "still here");
  assert.ok(pings >= 3, `expected several pings, saw ${pings}`);
  assert.equal(sock.readyState, "open");
  await sock.close();
});

// -- Backpressure --

Deno.test("a socket stops reading from TCP while maxQueuedBytes of messages wait unread", async () => {
  const release = Promise.withResolvers<void>();
  const received = Promise.withResolvers<number>();
  await using server = serve(async (sock) => {
    await release.promise;
    let count = 0;
    for await (const msg of sock) {
      if (msg.type === "binary") count++;
      if (count === 64) break;
    }
    received.resolve(count);
  }, { maxQueuedBytes: 64 * 1024 });
  // Room for all 64 MiB on our side: this test is about the server's bound.
  const sock = await connect(urlOf(server), {
    maxBufferedAmount: 128 * 1024 * 1024,
  });
  const payload = new Uint8Array(1024 * 1024);
  let last: Promise<void> | undefined;
  for (let i = 0; i < 64; i++) last = sock.write(payload);
  // 64 MiB cannot fit in loopback socket buffers: if the server kept
  // reading into its queue, our writes would all have been handed to the OS.
  await sleep(300);
  assert.ok(
    sock.bufferedAmount > 16 * 1024 * 1024,
    `bufferedAmount ${sock.bufferedAmount}`,
  );
  release.resolve();
  assert.equal(await within(received.promise, "64 messages", 20_000), 64);
  await within(last!, "the last write", 20_000);
  assert.equal(sock.bufferedAmount, 0);
  await sock.close();
});

Deno.test("messages sent in the same packet as the upgrade arrive as the first message", async () => {
  const first = Promise.withResolvers<Message | null>();
  await using server = serve(async (sock) => {
    first.resolve(await sock.read());
  });
  await using raw = await RawClient.connect(server.addr.port);
  const request = new TextEncoder().encode(
    `GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  const frame = clientFrame(0x1, "early");
  const packet = new Uint8Array(request.length + frame.length);
  packet.set(request);
  packet.set(frame, request.length);
  await raw.send(packet);
  assert.match(await within(raw.readHead()), /^HTTP\/1.1 101 /);
  assert.deepEqual(await within(first.promise), {
    type: "text",
    data: "early",
  });
  assert.equal((await within(raw.readClose()))?.code, 1000);
});

Deno.test("a peer that never reads is dropped once maxBufferedAmount is exceeded", async () => {
  const outcome = Promise.withResolvers<
    { error: unknown; last: Message | null }
  >();
  await using server = serve(async (sock) => {
    const chunk = new Uint8Array(64 * 1024);
    let error: unknown = null;
    // Un-awaited writes, as a careless broadcaster would make.
    for (let i = 0; i < 10_000 && error === null; i++) {
      sock.write(chunk).catch((e) => error ??= e);
      if (i % 16 === 0) await sleep(1);
    }
    let last: Message | null = null;
    for await (const msg of sock) last = msg;
    outcome.resolve({ error, last });
  }, { maxBufferedAmount: 1024 * 1024 });
  // Upgrades, then never reads: the server's send buffer can only grow.
  await using _raw = await RawClient.upgrade(server.addr.port);
  const { error, last } = await within(outcome.promise, "the outcome", 10_000);
  assert.ok(
    error instanceof Error && error.name === "WebSocketError",
    String(error),
  );
  assert.equal((error as { code?: string }).code, "SOCKET_CLOSED");
  assert.equal(last?.type, "close");
  assert.equal((last as { code: number }).code, 1006);
  assert.match((last as { reason: string }).reason, /maxBufferedAmount/);
});

// -- Connection cap --

Deno.test("connections over maxConnections get 503 and are closed; the server keeps serving", async () => {
  await using server = serve(async (sock) => {
    for await (const _ of sock) { /* hold the connection */ }
  }, { maxConnections: 2 });
  const a = await connect(urlOf(server));
  const b = await connect(urlOf(server));
  await using raw = await RawClient.connect(server.addr.port);
  const response = new TextDecoder().decode(await within(raw.readToEnd()));
  assert.match(response, /^HTTP\/1.1 503 Service Unavailable\r\n/);
  const refused = await connect(urlOf(server)).catch((e) => e);
  assert.equal(refused.code, "BAD_HANDSHAKE");
  assert.match(refused.message, /503/);
  await a.close();
  // A freed slot is usable again.
  let c: Awaited<ReturnType<typeof connect>> | undefined;
  for (let i = 0; i < 100 && c === undefined; i++) {
    c = await connect(urlOf(server)).catch(() => undefined);
    if (c === undefined) {
      await sleep(10);
    }
  }
  assert.ok(c, "a connection after one closed");
  await c.close();
  await b.close();
});

Deno.test("messages kept after their connection ended stay intact while new connections reuse its buffers", async () => {
  // Read and write buffers of ended connections are reused by new ones.
  // Nothing delivered may be a view of them, and bytes that came with the
  // upgrade request must be processed before the buffer is read into.
  const kept = new Map<number, Uint8Array[]>();
  await using server = serve(async (sock) => {
    const id = Number(new URL(sock.request.url).searchParams.get("id"));
    const messages: Uint8Array[] = [];
    kept.set(id, messages);
    for await (const msg of sock) {
      if (msg.type === "binary") {
        messages.push(msg.data);
        sock.write(msg.data);
      }
    }
  });
  const payload = (id: number, i: number) =>
    new Uint8Array(1 + ((id * 97 + i * 501) % 3000)).map((_, j) =>
      (id * 13 + i * 7 + j) & 255
    );
  const run = async (id: number) => {
    await using raw = await RawClient.connect(server.addr.port);
    const parts = [
      new TextEncoder().encode(
        `GET /?id=${id} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      ),
      ...[0, 1, 2, 3, 4].map((i) => clientFrame(0x2, payload(id, i))),
      clientFrame(0x8, new Uint8Array([0x03, 0xe8])),
    ];
    // One packet: the frames arrive in the same read as the request.
    const packet = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let offset = 0;
    for (const part of parts) {
      packet.set(part, offset);
      offset += part.length;
    }
    await raw.send(packet);
    assert.match(await raw.readHead(), /^HTTP\/1.1 101 /);
    assert.equal((await raw.readClose())?.code, 1000);
  };
  for (let wave = 0; wave < 6; wave++) {
    await Promise.all(
      Array.from({ length: 25 }, (_, k) => run(wave * 25 + k)),
    );
  }
  assert.equal(kept.size, 150);
  for (const [id, messages] of kept) {
    assert.equal(messages.length, 5, `connection ${id}`);
    messages.forEach((data, i) =>
      assert.deepEqual(data, payload(id, i), `connection ${id}, message ${i}`)
    );
  }
});

Deno.test("a connection that never runs dry lets the event loop turn at least every 4 MiB it reads", async () => {
  // Reads that find data waiting complete at once; without a turn of the
  // event loop now and then, one busy socket held up timers, other sockets
  // and the runtime's own tasks while it read 33-55 MiB.
  const count = 64;
  let sinceTurn = 0;
  let most = 0;
  let turning = true;
  const turn = () => {
    sinceTurn = 0;
    if (turning) setImmediate(turn);
  };
  setImmediate(turn);
  const done = Promise.withResolvers<void>();
  let received = 0;
  await using server = serve(async (sock) => {
    for await (const msg of sock) {
      if (msg.type !== "binary") continue;
      sinceTurn += msg.data.length;
      most = Math.max(most, sinceTurn);
      if (++received === count) break;
    }
    turning = false;
    done.resolve();
  }, { maxQueuedBytes: 256 * 1024 * 1024 });
  const sender = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read", // the shared test helpers read the test certificate
      new URL("./fixtures/blast.ts", import.meta.url).pathname,
      String(server.addr.port),
      String(count),
    ],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  await within(done.promise, "64 MiB from the sender");
  await server.close();
  assert.equal((await sender.status).code, 0);
  // 4 MiB, the read that crossed it (up to a message) and the message that
  // was half read at the last turn.
  const MiB = 1024 * 1024;
  assert.ok(most <= 6 * MiB, `${(most / MiB).toFixed(1)} MiB between turns`);
});
