/**
 * Write semantics (SPEC, issue 11): `write` resolves at once under
 * `writeHighWaterMark` and after the OS took enough over it; awaited writes
 * of one turn still leave in one system call; `flush()` waits for the OS;
 * `send()` picks text or binary; a frame lost with the connection does not
 * reject its write.
 */

import assert from "node:assert/strict";
import { connect, type Socket, WebSocketError } from "../mod.ts";
import {
  connectToRaw,
  RawClient,
  RawServer,
  serve,
  settlesWithin,
  sleep,
  urlOf,
  waitFor,
  within,
} from "./_helpers.ts";

const KiB = 1024;

/** Counts the system calls a socket's writes make. */
function countWrites(sock: Socket): number[] {
  const calls: number[] = [];
  const conn = sock.conn;
  const write = conn.write.bind(conn);
  conn.write = (p: Uint8Array) => {
    calls.push(p.length);
    return write(p);
  };
  return calls;
}

Deno.test("100 awaited writes in a row leave in one write call", async () => {
  const done = Promise.withResolvers<number[]>();
  await using server = serve(async (sock) => {
    const calls = countWrites(sock);
    for (let i = 0; i < 100; i++) {
      await sock.write(new Uint8Array([i]));
    }
    await sock.flush();
    done.resolve(calls);
    for await (const _ of sock) { /* until the close */ }
  });
  const client = await connect(urlOf(server));
  for (let i = 0; i < 100; i++) {
    assert.deepEqual(await within(client.read()), {
      type: "binary",
      data: new Uint8Array([i]),
    });
  }
  // 100 frames of 3 bytes each, in one system call.
  assert.deepEqual(await within(done.promise), [300]);
  await client.close();
});

Deno.test("the README's echo loop answers a burst of 64 messages in one or two write calls", async () => {
  const calls = Promise.withResolvers<number[]>();
  await using server = serve(async (sock) => {
    calls.resolve(countWrites(sock));
    for await (const msg of sock) {
      if (msg.type === "text" || msg.type === "binary") {
        await sock.write(msg.data, msg.type);
      }
    }
  });
  const client = await connect(urlOf(server));
  const counted = await within(calls.promise);
  for (let i = 0; i < 64; i++) client.write(`message ${i}`, "text");
  for (let i = 0; i < 64; i++) {
    assert.deepEqual(await within(client.read()), {
      type: "text",
      data: `message ${i}`,
    });
  }
  // Without early resolution each awaited write waited for its own flush:
  // 64 calls.
  assert.ok(counted.length <= 2, `${counted.length} write calls`);
  await client.close();
});

/**
 * Writes 16 KiB messages, awaiting each, to a peer that does not read;
 * records `bufferedAmount` after each write resolved.
 */
function stallingWriter(sock: Socket, highWaterMark: number) {
  const seen: number[] = [];
  let written = 0;
  let stop = false;
  const message = new Uint8Array(16 * KiB);
  const running = (async () => {
    while (!stop) {
      await sock.write(message);
      seen.push(sock.bufferedAmount);
      written++;
    }
  })();
  return {
    seen,
    get written() {
      return written;
    },
    highWaterMark,
    running,
    stop() {
      stop = true;
    },
  };
}

/** Waits until `count()` stops growing for `quietMs`. */
async function untilStalled(count: () => number, quietMs = 300) {
  let last = -1;
  while (count() !== last) {
    last = count();
    await sleep(quietMs);
  }
}

Deno.test("server: an awaiting writer stalls at writeHighWaterMark while the peer does not read, and goes on when it does", async () => {
  const hwm = 32 * KiB;
  const started = Promise.withResolvers<ReturnType<typeof stallingWriter>>();
  const sockReady = Promise.withResolvers<Socket>();
  await using server = serve(async (sock) => {
    sockReady.resolve(sock);
    const writer = stallingWriter(sock, hwm);
    started.resolve(writer);
    await writer.running;
    for await (const _ of sock) { /* until the close */ }
  }, { writeHighWaterMark: hwm });
  const client = await within(RawClient.upgrade(server.addr.port));
  const writer = await within(started.promise);
  const sock = await sockReady.promise;
  await untilStalled(() => writer.written);
  // Stalled: over the mark, by at most the one write that took it over.
  const buffered = sock.bufferedAmount;
  assert.ok(buffered > hwm, `bufferedAmount ${buffered}`);
  assert.ok(buffered <= hwm + 16 * KiB + 4, `bufferedAmount ${buffered}`);
  // Every write resolved at or under the mark.
  assert.ok(writer.seen.length > 0);
  for (const amount of writer.seen) assert.ok(amount <= hwm, `${amount}`);
  const stalledAt = writer.written;
  // The peer reads: the writer goes on.
  writer.stop();
  let frames = 0;
  while (frames < stalledAt + 1) {
    const frame = await within(client.readFrame());
    assert.equal(frame?.opcode, 0x2);
    assert.equal(frame?.payload.length, 16 * KiB);
    frames++;
  }
  await within(writer.running, "the stalled write to resolve");
  assert.ok(writer.written >= stalledAt + 1);
  client.close();
});

Deno.test("client: an awaiting writer stalls at writeHighWaterMark (default 64 KiB) against a server that does not read", async () => {
  await using raw = new RawServer();
  const { sock, peer } = await connectToRaw(raw);
  const writer = stallingWriter(sock, 64 * KiB);
  await untilStalled(() => writer.written);
  const buffered = sock.bufferedAmount;
  assert.ok(buffered > 64 * KiB, `bufferedAmount ${buffered}`);
  assert.ok(buffered <= 64 * KiB + 16 * KiB + 8, `bufferedAmount ${buffered}`);
  for (const amount of writer.seen) assert.ok(amount <= 64 * KiB);
  // The server resets: the stalled write resolves (its frame was lost
  // with the connection, which `closed` reports), the next one rejects.
  writer.stop();
  peer.close();
  await within(writer.running, "the stalled write to resolve");
  assert.equal((await within(sock.closed)).code, 1006);
  await assert.rejects(
    sock.write("after"),
    (e) => e instanceof WebSocketError && e.code === "SOCKET_CLOSED",
  );
});

Deno.test("writeHighWaterMark 0: each write resolves only once its bytes were handed to the OS", async () => {
  await using server = serve(async (sock) => {
    for await (const _ of sock) { /* until the close */ }
  });
  const sock = await connect(urlOf(server), { writeHighWaterMark: 0 });
  const writing = sock.write("x", "text");
  assert.ok(sock.bufferedAmount > 0);
  await writing;
  assert.equal(sock.bufferedAmount, 0);
  await sock.close();
});

Deno.test("writeHighWaterMark must be a non-negative number", () => {
  for (const bad of [-1, Number.NaN, "1" as unknown as number]) {
    assert.throws(
      () => serve(() => {}, { writeHighWaterMark: bad }),
      (e) => e instanceof TypeError && /writeHighWaterMark/.test(e.message),
    );
  }
});

Deno.test("a small write resolves before its bytes were handed to the OS; flush() waits for them", async () => {
  await using server = serve(async (sock) => {
    for await (const _ of sock) { /* until the close */ }
  });
  const sock = await connect(urlOf(server));
  await sock.write("queued", "text");
  assert.ok(sock.bufferedAmount > 0, "the write waited for the OS");
  await sock.flush();
  assert.equal(sock.bufferedAmount, 0);
  // Nothing queued: resolves at once.
  await within(sock.flush());
  await sock.close();
});

Deno.test("flush() waits for a peer that does not read, and rejects when it goes away", async () => {
  await using raw = new RawServer();
  const { sock, peer } = await connectToRaw(raw);
  sock.write(new Uint8Array(8 * 1024 * 1024));
  const flushing = sock.flush();
  assert.equal(await settlesWithin(flushing, 300), false);
  peer.close();
  await assert.rejects(
    within(flushing),
    (e) => e instanceof WebSocketError && e.code === "SOCKET_CLOSED",
  );
  await within(sock.closed);
  await assert.rejects(
    sock.flush(),
    (e) => e instanceof WebSocketError && e.code === "SOCKET_CLOSED",
  );
});

Deno.test("flush() resolves once the peer reads what was queued", async () => {
  const received = Promise.withResolvers<number>();
  await using server = serve(async (sock) => {
    await sleep(200); // Not reading yet: the client's bytes wait.
    let bytes = 0;
    for await (const msg of sock) {
      if (msg.type === "binary") bytes += msg.data.length;
      if (bytes === 8 * 1024 * 1024) received.resolve(bytes);
    }
  }, { maxQueuedBytes: 64 * KiB });
  const sock = await connect(urlOf(server));
  sock.write(new Uint8Array(8 * 1024 * 1024));
  await within(sock.flush(), "the flush");
  assert.equal(sock.bufferedAmount, 0);
  assert.equal(await within(received.promise), 8 * 1024 * 1024);
  await sock.close();
});

Deno.test("send(): strings as text, bytes of any view as binary, other values rejected", async () => {
  await using server = serve(async (sock) => {
    for await (const msg of sock) {
      if (msg.type === "text" || msg.type === "binary") {
        await sock.send(msg.data);
      }
    }
  });
  const sock = await connect(urlOf(server));
  await sock.send("héllo");
  await sock.send(new Uint8Array([1, 2, 3]));
  await sock.send(new Uint8Array([9, 4, 5, 6, 9]).subarray(1, 4));
  await sock.send(new Uint16Array([0x0201]).buffer);
  await sock.send(new DataView(new Uint8Array([7, 8, 9]).buffer, 1, 2));
  assert.deepEqual(await within(sock.read()), { type: "text", data: "héllo" });
  for (
    const bytes of [[1, 2, 3], [4, 5, 6], [1, 2], [8, 9]]
  ) {
    assert.deepEqual(await within(sock.read()), {
      type: "binary",
      data: new Uint8Array(bytes),
    });
  }
  await assert.rejects(
    sock.send(42 as unknown as string),
    (e) => e instanceof TypeError && /Cannot send/.test(e.message),
  );
  await sock.close();
  await assert.rejects(
    sock.send("after"),
    (e) => e instanceof WebSocketError && e.code === "SOCKET_CLOSED",
  );
});

Deno.test("a buffer of 256 KiB or more is written uncopied: it is the caller's again once its awaited write resolves", async () => {
  const received = Promise.withResolvers<Uint8Array>();
  await using server = serve(async (sock) => {
    const big = new Uint8Array(1024 * 1024).fill(1);
    await sock.write(big);
    big.fill(2); // Must not reach the peer.
    for await (const _ of sock) { /* until the close */ }
  });
  const sock = await connect(urlOf(server));
  const msg = await within(sock.read());
  assert.equal(msg?.type, "binary");
  received.resolve((msg as { data: Uint8Array }).data);
  const data = await received.promise;
  assert.equal(data.length, 1024 * 1024);
  assert.ok(data.every((b) => b === 1), "the buffer changed under the write");
  await sock.close();
  await waitFor(() => server.connections === 0, "the server to forget it");
});
