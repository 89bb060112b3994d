/**
 * Runs every script in examples/ and checks what it prints and sends.
 *
 * Server examples run as subprocesses on port 0 and are driven with
 * `connect`; client examples run against an in-test `listen` server.
 */

import assert from "node:assert/strict";
import {
  connect,
  listen,
  type Message,
  type Socket,
  WebSocketError,
} from "../mod.ts";
import {
  echoHandler,
  runClientExample,
  startExample,
  startServerExample,
} from "./_examples.ts";
import {
  CERT,
  freePort,
  lines,
  readData,
  recordingServer,
  serve,
  urlOf,
} from "./_helpers.ts";

const decoder = new TextDecoder();

/** Asserts that `needles` occur in `haystack` in this order. */
function assertInOrder(haystack: string, needles: string[]): void {
  let from = 0;
  for (const needle of needles) {
    const at = haystack.indexOf(needle, from);
    assert.ok(
      at >= 0,
      `expected ${
        JSON.stringify(needle)
      } after offset ${from} in:\n${haystack}`,
    );
    from = at + needle.length;
  }
}

// -- Server examples --

Deno.test({
  name: "echo_server.ts echoes text with a prefix and binary as is",
  async fn() {
    const { process, url } = await startServerExample("echo_server.ts");
    try {
      const sock = await connect(url);
      await sock.write("hello", "text");
      assert.deepEqual(await sock.read(), {
        type: "text",
        data: "Echo: hello",
      });
      await sock.write(new Uint8Array([1, 2, 3]));
      assert.deepEqual(await sock.read(), {
        type: "binary",
        data: new Uint8Array([1, 2, 3]),
      });
      await sock.close();
      assert.deepEqual(await sock.closed, {
        code: 1000,
        reason: "",
        wasClean: true,
      });

      await process.waitFor("Connection closed");
      assertInOrder(process.stdout, [
        "New WebSocket connection from 127.0.0.1:",
        "Received: hello",
        "Binary data, length: 3",
        "Close frame received: 1000",
        "Connection closed",
      ]);
    } finally {
      const status = await process.stop();
      // SIGTERM runs server.close() and exits with 0.
      assert.equal(status.code, 0, process.stderr);
    }
  },
});

Deno.test({
  name: "heartbeat_server.ts pings clients and prints their pongs",
  async fn() {
    const { process, url } = await startServerExample("heartbeat_server.ts", {
      env: { PING_INTERVAL: "100" },
    });
    await using _ = process;
    const sock = await connect(url);
    const pings: string[] = [];
    const texts: string[] = [];
    // Keep reading so the library sees the pings (and answers them).
    const reader = (async () => {
      for await (const msg of sock) {
        if (msg.type === "ping") pings.push(decoder.decode(msg.data));
        if (msg.type === "text") texts.push(msg.data);
      }
    })();

    await sock.write("hi", "text");
    await process.waitFor("Received pong: heartbeat");
    assert.match(process.stdout, /Client connected\nSent ping\n/);
    assert.ok(pings.length >= 1);
    assert.ok(pings.every((data) => data === "heartbeat"));
    assert.deepEqual(texts, ["Received: hi"]);

    await sock.close();
    await reader;
    await process.waitFor("Client disconnected");
  },
});

Deno.test({
  name: "broadcast_server.ts sends each text message to every client",
  async fn() {
    const { process, url } = await startServerExample("broadcast_server.ts");
    await using _ = process;
    const welcome = { type: "text", data: "Welcome to broadcast server!" };

    const alice = await connect(url);
    assert.deepEqual(await readData(alice), welcome);
    const bob = await connect(url);
    assert.deepEqual(await readData(bob), welcome);
    await process.waitFor("Client connected, total: 2");

    await alice.write("hello all", "text");
    const expected = { type: "text", data: "hello all" };
    assert.deepEqual(await readData(alice), expected);
    assert.deepEqual(await readData(bob), expected);
    await process.waitFor("Broadcasted to 2 clients");

    await bob.close();
    await process.waitFor("Client disconnected, remaining: 1");
    await alice.write("anyone?", "text");
    assert.deepEqual(await readData(alice), { type: "text", data: "anyone?" });
    await process.waitFor("Broadcasted to 1 clients");
    await alice.close();
    await process.waitFor("Client disconnected, remaining: 0");
  },
});

Deno.test({
  name: "json_server.ts answers JSON requests and ignores other text",
  async fn() {
    const { process, url } = await startServerExample("json_server.ts");
    await using _ = process;
    const sock = await connect(url);
    try {
      await sock.write("not json", "text");
      await sock.write(
        JSON.stringify({ type: "note", action: "skip" }),
        "text",
      );
      const before = Math.floor(Date.now() / 1000);
      await sock.write(
        JSON.stringify({
          type: "request",
          action: "sum",
          payload: { a: 1, b: [2, 3] },
        }),
        "text",
      );

      // The first two messages get no answer, so this is the third's.
      const msg = await readData(sock);
      assert.equal(msg?.type, "text");
      const response = JSON.parse(msg.data);
      assert.equal(typeof response.data.timestamp, "number");
      assert.ok(response.data.timestamp >= before - 1);
      assert.deepEqual(response, {
        type: "response",
        action: "sum",
        status: "success",
        data: { timestamp: response.data.timestamp, echo: { a: 1, b: [2, 3] } },
      });
      await process.waitFor("Request: sum");
      assert.match(process.stdout, /Ignoring invalid JSON: not json/);
    } finally {
      await sock.close();
    }
  },
});

Deno.test({
  name: "tls_server.ts serves wss:// with the fixture certificate",
  async fn() {
    const { process, port, url } = await startServerExample("tls_server.ts");
    await using _ = process;
    assert.equal(url, `wss://127.0.0.1:${port}`);

    for (const host of ["localhost", "127.0.0.1"]) {
      const sock = await connect(`wss://${host}:${port}`, { caCerts: [CERT] });
      try {
        assert.deepEqual(await readData(sock), {
          type: "text",
          data: "Secure connection established",
        });
        await sock.write(`hi from ${host}`, "text");
        assert.deepEqual(await readData(sock), {
          type: "text",
          data: `Secure echo: hi from ${host}`,
        });
      } finally {
        await sock.close();
      }
      assert.equal((await sock.closed).wasClean, true);
    }

    // Without the certificate as a trust anchor the handshake must fail.
    await assert.rejects(connect(url), WebSocketError);
  },
});

Deno.test({
  name: "binary_server.ts acknowledges binary messages with type and size",
  async fn() {
    const { process, url } = await startServerExample("binary_server.ts");
    await using _ = process;
    const sock = await connect(url);
    try {
      await sock.write("text is ignored", "text");
      await sock.write(new Uint8Array(1000).fill(7));
      const msg = await readData(sock);
      assert.equal(msg?.type, "binary");
      assert.equal(msg.data.length, 8);
      const view = new DataView(msg.data.buffer, msg.data.byteOffset, 8);
      assert.equal(view.getUint32(0), 1);
      assert.equal(view.getUint32(4), 1000);
      assert.deepEqual(
        msg.data,
        new Uint8Array([0, 0, 0, 1, 0, 0, 0x03, 0xe8]),
      );
      await process.waitFor("Received binary data, size: 1000");
    } finally {
      await sock.close();
    }
  },
});

Deno.test({
  name: "server_close.ts closes the server and exits",
  async fn() {
    const { process, url } = await startServerExample("server_close.ts", {
      env: { CLOSE_AFTER: "1000" },
    });
    await using _ = process;
    // While it is up, the handler closes every connection straight away.
    const sock = await connect(url);
    assert.deepEqual(await sock.read(), {
      type: "close",
      code: 1000,
      reason: "",
    });
    assert.equal(await sock.read(), null);
    await sock.close();

    const status = await process.exited();
    assert.equal(status.code, 0, process.stderr);
    assert.match(process.stdout, /Server closed\n$/);
    await assert.rejects(connect(url), WebSocketError);
  },
});

Deno.test("every server example exits with 0 on a SIGTERM right after it listens", async () => {
  for (
    const name of [
      "echo_server.ts",
      "heartbeat_server.ts",
      "broadcast_server.ts",
      "json_server.ts",
      "tls_server.ts",
      "binary_server.ts",
    ]
  ) {
    const { process } = await startServerExample(name);
    const status = await process.stop();
    assert.equal(status.code, 0, `${name}: ${process.stderr}`);
  }
});

Deno.test("a server example sends 1001 Going Away to open clients on SIGTERM", async () => {
  const { process, url } = await startServerExample("echo_server.ts");
  await using _ = process;
  const sock = await connect(url);
  await sock.write("still here", "text");
  assert.deepEqual(await readData(sock), {
    type: "text",
    data: "Echo: still here",
  });

  const next = readData(sock);
  const status = await process.stop();
  assert.equal(status.code, 0, process.stderr);
  const msg = await next;
  assert.equal(msg?.type, "close");
  assert.equal(msg.code, 1001);
  assert.equal(await sock.read(), null);
  await sock.close();
  assert.equal((await sock.closed).code, 1001);
});

// -- Client examples --

Deno.test({
  name: "echo_client.ts sends five messages and prints the replies",
  async fn() {
    await using server = serve(echoHandler);
    const run = await runClientExample("echo_client.ts", urlOf(server, ""));
    assert.equal(run.code, 0, run.stderr);
    const expected = ["Connected to server"];
    for (let i = 1; i <= 5; i++) {
      expected.push(`Sent: Message ${i}`, `Received: Echo: Message ${i}`);
    }
    expected.push("Client disconnected");
    assert.deepEqual(lines(run.stdout), expected);
  },
});

Deno.test({
  name: "echo_client.ts reports a failed connect and exits with 1",
  async fn() {
    const run = await runClientExample(
      "echo_client.ts",
      `ws://127.0.0.1:${freePort()}`,
    );
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stdout, /^Connect failed: .+/);
  },
});

Deno.test({
  name: "echo_client.ts takes its URL from the URL environment variable",
  async fn() {
    await using server = serve(echoHandler);
    await using process = startExample("echo_client.ts", {
      env: { URL: urlOf(server, "") },
    });
    const status = await process.exited();
    assert.equal(status.code, 0, process.stderr);
    assert.match(
      process.stdout,
      /Received: Echo: Message 5\nClient disconnected\n$/,
    );
  },
});

Deno.test({
  name: "reconnect_client.ts backs off exponentially and reconnects",
  async fn() {
    const port = freePort();
    await using process = startExample("reconnect_client.ts", {
      args: [`ws://127.0.0.1:${port}`],
      env: { MAX_ATTEMPTS: "4", RECONNECT_DELAY: "100", SEND_INTERVAL: "20" },
    });

    // Attempts 1 and 2 fail: nothing listens yet.
    await process.waitFor("Reconnecting in 0.2 seconds...");

    // Attempts 3 and 4 succeed; each session gets one reply, then a close.
    let sessions = 0;
    const server = listen({
      addr: `127.0.0.1:${port}`,
      async handler(sock) {
        sessions++;
        const first = await readData(sock);
        assert.equal(first?.type, "text");
        await sock.write(`Echo: ${first.data}`, "text");
        await readData(sock);
        await sock.close(1000, "bye");
      },
    });
    try {
      const status = await process.exited();
      assert.equal(status.code, 0, process.stderr);
    } finally {
      await server.close();
    }

    assert.equal(sessions, 2);
    const session = [
      "Connected to server",
      "Received: Echo: Hello from auto-reconnect client",
      "Server closed connection",
    ];
    const out = lines(process.stdout);
    assert.match(out[0], /^Connect failed: /);
    assert.match(out[2], /^Connect failed: /);
    assert.deepEqual(out, [
      out[0],
      "Reconnecting in 0.1 seconds...",
      out[2],
      "Reconnecting in 0.2 seconds...",
      ...session,
      "Reconnecting in 0.1 seconds...",
      ...session,
      "Giving up after 4 attempts",
    ]);
  },
});

Deno.test({
  name: "read_loop_client.ts prints each message type until the close",
  async fn() {
    const pong = Promise.withResolvers<Message | null>();
    await using server = serve(async (sock: Socket) => {
      await sock.write("hello", "text");
      await sock.write(new Uint8Array([1, 2, 3]), "binary");
      await sock.write("are you there", "ping");
      pong.resolve(await sock.read());
      await sock.close(1000, "bye");
    });
    const run = await runClientExample(
      "read_loop_client.ts",
      urlOf(server, ""),
    );
    assert.equal(run.code, 0, run.stderr);
    const [first, ...rest] = lines(run.stdout);
    assert.match(
      first,
      new RegExp(
        `^Connected to 127\\.0\\.0\\.1:${server.addr.port} ` +
          `\\(HTTP 101, local port \\d+\\)$`,
      ),
    );
    assert.deepEqual(rest, [
      "Text message: hello",
      "Binary message, length: 3",
      "Received ping: are you there",
      "Close frame received: 1000 bye",
      "Connection closed",
    ]);
    // The library answered the ping by itself.
    const reply = await pong.promise;
    assert.equal(reply?.type, "pong");
    assert.equal(decoder.decode(reply.data), "are you there");
  },
});

Deno.test({
  name: "write_client.ts sends text, binary, a ping and a 1 MiB message",
  async fn() {
    await using server = recordingServer();
    const run = await runClientExample("write_client.ts", urlOf(server, ""));
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(lines(run.stdout), [
      "Sent 6 messages, the last one 1048576 bytes",
      "Connection closed",
    ]);
    await server.done;
    assert.deepEqual(server.received, [
      { type: "text", data: "Hello, World!" },
      { type: "text", data: "Hello, 世界!" },
      { type: "binary", data: new Uint8Array([1, 2, 3, 4]) },
      { type: "binary", data: new Uint8Array([0x00, 0xff, 0xfe, 0xfd]) },
      { type: "ping", data: new TextEncoder().encode("ping") },
      { type: "binary", data: new Uint8Array(1024 * 1024).fill(0x41) },
      { type: "close", code: 1000, reason: "" },
    ]);
  },
});

Deno.test({
  name: "control_frame_limit.ts shows a 200-byte ping rejected with RangeError",
  async fn() {
    await using server = recordingServer();
    const run = await runClientExample(
      "control_frame_limit.ts",
      urlOf(server, ""),
    );
    assert.equal(run.code, 0, run.stderr);
    const out = lines(run.stdout);
    assert.equal(out.length, 3, run.stdout);
    assert.equal(out[0], "Sent a 4-byte ping");
    assert.match(out[1], /^Error: .*125 bytes or less/);
    assert.equal(out[2], "Connection closed");
    await server.done;
    // Only the small ping went out, and the connection closed normally.
    assert.deepEqual(server.received, [
      { type: "ping", data: new TextEncoder().encode("ping") },
      { type: "close", code: 1000, reason: "" },
    ]);
  },
});

Deno.test({
  name: "large_message_client.ts gets its 1 MiB message back whole",
  async fn() {
    let size = 0;
    await using server = serve(async (sock) => {
      for await (const msg of sock) {
        if (msg.type === "binary") {
          size = msg.data.length;
          await sock.write(msg.data, "binary");
        }
      }
    });
    const run = await runClientExample(
      "large_message_client.ts",
      urlOf(server, ""),
    );
    assert.equal(run.code, 0, run.stderr);
    assert.equal(size, 1048576);
    assert.equal(run.stdout, "Received complete message, size: 1048576\n");
  },
});

Deno.test({
  name: "graceful_close_client.ts waits for the server's close frame",
  async fn() {
    const closed = Promise.withResolvers<unknown>();
    await using server = serve(async (sock) => {
      assert.deepEqual(await readData(sock), { type: "text", data: "Goodbye" });
      await sock.write("See you", "text");
      await sock.close(1000, "Goodbye received");
      closed.resolve(await sock.closed);
    });
    const run = await runClientExample(
      "graceful_close_client.ts",
      urlOf(server, ""),
    );
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(lines(run.stdout), [
      "Received: See you",
      "Received close frame from server: 1000 Goodbye received",
      "Connection closed (code 1000, clean: true)",
    ]);
    // RFC 6455 7.1.5: the close code is the one in the close frame received,
    // here the client's echo, which repeats the code without the reason.
    assert.deepEqual(await closed.promise, {
      code: 1000,
      reason: "",
      wasClean: true,
    });
  },
});

Deno.test({
  name: "concurrent_clients.ts runs 10 connections at once",
  async fn() {
    let open = 0;
    let peak = 0;
    let total = 0;
    await using server = serve(async (sock) => {
      total++;
      peak = Math.max(peak, ++open);
      try {
        await echoHandler(sock);
      } finally {
        open--;
      }
    });
    const run = await runClientExample(
      "concurrent_clients.ts",
      urlOf(server, ""),
    );
    assert.equal(run.code, 0, run.stderr);
    const out = lines(run.stdout);
    assert.equal(out.at(-1), "All clients completed");
    const expected = Array.from(
      { length: 10 },
      (_, i) => `Client ${i + 1} received: Echo: Hello from client ${i + 1}`,
    );
    assert.deepEqual(out.slice(0, -1).sort(), expected.sort());
    assert.equal(total, 10);
    assert.ok(peak > 1, `connections never overlapped (peak ${peak})`);
  },
});

Deno.test({
  name: "batching_client.ts sends 100 messages, then one joined message",
  async fn() {
    await using server = recordingServer();
    const run = await runClientExample("batching_client.ts", urlOf(server, ""));
    assert.equal(run.code, 0, run.stderr);
    const messages = Array.from({ length: 100 }, (_, i) => `Message ${i + 1}`);
    const batch = messages.join("\n");
    assert.deepEqual(lines(run.stdout), [
      "Sent 100 separate messages",
      `Sent 1 batched message of ${batch.length} bytes`,
    ]);
    await server.done;
    assert.deepEqual(server.received, [
      ...messages.map((data) => ({ type: "text", data })),
      { type: "text", data: batch },
      { type: "close", code: 1000, reason: "" },
    ]);
  },
});

Deno.test({
  name: "binary_pack_client.ts packs two u32 and an f32 and unpacks the echo",
  async fn() {
    let packet: Uint8Array | undefined;
    await using server = serve(async (sock) => {
      for await (const msg of sock) {
        if (msg.type === "binary") {
          packet = msg.data;
          await sock.write(msg.data, "binary");
        }
      }
    });
    const run = await runClientExample(
      "binary_pack_client.ts",
      urlOf(server, ""),
    );
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, "Received: 12345 67890 3.14159\n");
    // >I4I4f: 12345, 67890, then 3.14159 as an IEEE 754 single (0x40490fd0).
    assert.deepEqual(
      packet,
      new Uint8Array([
        0,
        0,
        0x30,
        0x39,
        0,
        1,
        0x09,
        0x32,
        0x40,
        0x49,
        0x0f,
        0xd0,
      ]),
    );
  },
});

Deno.test({
  name: "connection_reuse_client.ts makes every request over one connection",
  async fn() {
    let connections = 0;
    let requests = 0;
    await using server = serve(async (sock) => {
      connections++;
      for await (const msg of sock) {
        if (msg.type !== "text") continue;
        requests++;
        assert.equal(msg.data, `Request ${requests}`);
        await sock.write(`Response ${requests}`, "text");
      }
    });
    const run = await runClientExample(
      "connection_reuse_client.ts",
      urlOf(server, ""),
      {
        env: { REQUESTS: "20", DELAY_MS: "5" },
      },
    );
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, "Completed 20 requests over one connection\n");
    assert.equal(connections, 1);
    assert.equal(requests, 20);
  },
});
