/**
 * `listen` and `Server` over real loopback connections.
 */

import assert from "node:assert/strict";
import {
  connect,
  listen,
  type ListenOptions,
  type Message,
  type Socket,
  WebSocketError,
} from "../mod.ts";
import { FakeTime } from "./_fake_time.ts";
import {
  CERT,
  clientFrame,
  closePayload,
  concat,
  drain,
  echo,
  KEY,
  RawClient,
  readAll,
  serve,
  sleep,
  upgradeRequest,
  urlOf,
  utf8,
  waitFor,
  within,
} from "./_helpers.ts";

/** Whether IPv6 loopback can be bound on this machine. */
const HAS_IPV6 = (() => {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
})();

/** The ws:// URL of a server, from its bound address. */
function urlFromAddr(addr: Deno.NetAddr, path = "/"): string {
  const host = addr.hostname.includes(":")
    ? `[${addr.hostname}]`
    : addr.hostname;
  return `ws://${host}:${addr.port}${path}`;
}

/** Sends a message and expects it back. */
async function assertEchoes(url: string): Promise<void> {
  const sock = await within(connect(url));
  await sock.write("ping?", "text");
  assert.deepEqual(await within(sock.read()), { type: "text", data: "ping?" });
  await within(sock.close());
}

// -- listen() options --

Deno.test("listen() throws a TypeError naming addr for a malformed address", () => {
  const bad: unknown[] = [
    "127.0.0.1",
    "127.0.0.1:",
    "127.0.0.1:http",
    "127.0.0.1:65536",
    "127.0.0.1:123456",
    "::1:0",
    "[::1]",
    "[::1]0",
    "a:b:0",
    "",
    8080,
    undefined,
    null,
  ];
  for (const addr of bad) {
    assert.throws(
      () => listen({ addr, handler() {} } as unknown as ListenOptions),
      (e: unknown) => e instanceof TypeError && /\baddr\b/.test(e.message),
      `addr ${JSON.stringify(addr)}`,
    );
  }
});

Deno.test("listen() throws a TypeError naming handler when it is missing", () => {
  for (const handler of [undefined, null, "handler", {}]) {
    assert.throws(
      () =>
        listen({ addr: "127.0.0.1:0", handler } as unknown as ListenOptions),
      (e: unknown) => e instanceof TypeError && /\bhandler\b/.test(e.message),
    );
  }
});

Deno.test("listen() throws a TypeError naming certs when tls has no certificate", () => {
  for (const certs of [undefined, [], [{ cert: CERT }], "cert"]) {
    assert.throws(
      () =>
        listen(
          {
            addr: "127.0.0.1:0",
            handler() {},
            tls: true,
            certs,
          } as unknown as ListenOptions,
        ),
      (e: unknown) => e instanceof TypeError && /\bcerts\b/.test(e.message),
      `certs ${JSON.stringify(certs)}`,
    );
  }
});

Deno.test("listen() throws a TypeError naming backlog when it is not a positive integer", () => {
  for (const backlog of [0, -1, 1.5, NaN, "10"]) {
    assert.throws(
      () =>
        listen(
          {
            addr: "127.0.0.1:0",
            handler() {},
            backlog,
          } as unknown as ListenOptions,
        ),
      (e: unknown) => e instanceof TypeError && /\bbacklog\b/.test(e.message),
      `backlog ${String(backlog)}`,
    );
  }
});

Deno.test("listen() accepts a positive backlog", async () => {
  await using server = serve(echo, { backlog: 8 });
  await assertEchoes(urlOf(server));
});

Deno.test("listen() throws AddrInUse when the port is taken", async () => {
  await using first = serve(echo);
  assert.throws(
    () => listen({ addr: `127.0.0.1:${first.addr.port}`, handler() {} }),
    Deno.errors.AddrInUse,
  );
  // The first server is unharmed.
  await assertEchoes(urlOf(first));
});

// -- Addresses --

Deno.test('listen() binds "127.0.0.1:0" to a real port', async () => {
  await using server = serve(echo, { addr: "127.0.0.1:0" });
  assert.equal(server.addr.transport, "tcp");
  assert.equal(server.addr.hostname, "127.0.0.1");
  assert.ok(server.addr.port > 0 && server.addr.port < 65536);
  await using other = serve(echo);
  assert.notEqual(other.addr.port, server.addr.port);
  await assertEchoes(urlOf(server));
});

Deno.test('listen() binds "localhost:0" to a loopback address', async () => {
  await using server = serve(echo, { addr: "localhost:0" });
  assert.ok(
    ["127.0.0.1", "::1"].includes(server.addr.hostname),
    server.addr.hostname,
  );
  assert.ok(server.addr.port > 0);
  await assertEchoes(urlFromAddr(server.addr));
});

Deno.test({
  name: 'listen() binds "[::1]:0" to IPv6 loopback',
  ignore: !HAS_IPV6,
  async fn() {
    await using server = serve(echo, { addr: "[::1]:0" });
    assert.equal(server.addr.hostname, "::1");
    assert.ok(server.addr.port > 0);
    await assertEchoes(`ws://[::1]:${server.addr.port}/`);
  },
});

// -- The handler --

Deno.test("when the handler returns, the socket is closed with 1000", async () => {
  await using server = serve(async (sock) => {
    await sock.write("hello", "text");
  });
  const sock = await within(connect(urlOf(server)));
  assert.deepEqual(await within(readAll(sock)), [
    { type: "text", data: "hello" },
    { type: "close", code: 1000, reason: "" },
  ]);
  assert.deepEqual(await within(sock.closed), {
    code: 1000,
    reason: "",
    wasClean: true,
  });
  await sock.close();
});

Deno.test("a handler that is not async: a throw is 1011, a return is 1000, and an onError that throws breaks nothing", async () => {
  const errors: unknown[] = [];
  const boom = new Error("plain failure");
  await using server = serve((sock) => {
    const path = new URL(sock.request.url).pathname;
    if (path === "/throw") throw boom;
    if (path === "/reject") return Promise.reject(boom);
    if (path === "/fine") return echo(sock);
    // "/return": returning at once closes with 1000.
  }, {
    onError(e) {
      errors.push(e);
      throw new Error("onError fails too");
    },
  });
  for (
    const [path, code] of [["/throw", 1011], ["/return", 1000], [
      "/reject",
      1011,
    ]] as const
  ) {
    const sock = await within(connect(urlOf(server, path)));
    const messages = await within(readAll(sock));
    assert.deepEqual(messages.map((m) => m.type), ["close"], path);
    assert.equal((messages[0] as { code: number }).code, code, path);
    await sock.close();
  }
  await waitFor(() => errors.length === 2, "onError twice");
  assert.deepEqual(errors, [boom, boom]);
  await waitFor(() => server.connections === 0, "the server to forget them");
  await assertEchoes(urlOf(server, "/fine"));
});

Deno.test("sock.closed is one promise, made before or after the end, and the server forgets a socket whose handler never returns", async () => {
  const seen: Promise<unknown>[] = [];
  const serverSock = Promise.withResolvers<Socket>();
  await using server = serve((sock) => {
    serverSock.resolve(sock);
    // Never returns, never reads: the server still hears of the end.
    return new Promise<void>(() => {});
  });
  const early = await within(connect(urlOf(server)));
  const sock = await within(serverSock.promise);
  seen.push(sock.closed, sock.closed);
  assert.equal(seen[0], seen[1]);
  assert.equal(server.connections, 1);
  await early.close(4001, "bye");
  // The library answers the close frame whether the handler reads or not.
  assert.deepEqual(await within(sock.closed), {
    code: 4001,
    reason: "bye",
    wasClean: true,
  });
  assert.equal(sock.closed, seen[0]);
  assert.equal(sock.readyState, "closed");
  await waitFor(() => server.connections === 0, "the server to forget it");

  // Asked for only after the end: settled already, the same each time.
  const late = Promise.withResolvers<Socket>();
  await using server2 = serve((sock) => late.resolve(sock));
  const client = await within(connect(urlOf(server2)));
  const other = await within(late.promise);
  await within(client.close(4002, "done"));
  await waitFor(() => other.readyState === "closed", "the end");
  assert.equal(other.closed, other.closed);
  assert.deepEqual(await within(other.closed), {
    code: 4002,
    reason: "done",
    wasClean: true,
  });
});

Deno.test("when the handler throws, the client gets 1011, onError gets the error, and the server keeps serving", async () => {
  const errors: unknown[] = [];
  const boom = new Error("sync failure");
  const bang = new Error("async failure");
  let calls = 0;
  await using server = serve(async (sock) => {
    calls++;
    const path = new URL(sock.request.url).pathname;
    if (path === "/sync") throw boom;
    if (path === "/async") {
      await sleep(1);
      throw bang;
    }
    await echo(sock);
  }, { onError: (e) => errors.push(e) });

  for (const [path, error] of [["/sync", boom], ["/async", bang]] as const) {
    const sock = await within(connect(urlOf(server, path)));
    const messages = await within(readAll(sock));
    assert.equal(messages.length, 1, path);
    assert.equal(messages[0].type, "close");
    assert.equal((messages[0] as { code: number }).code, 1011, path);
    assert.equal((await sock.closed).code, 1011);
    await sock.close();
    await waitFor(
      () => errors.length > 0 && errors.at(-1) === error,
      `onError for ${path}`,
    );
  }
  assert.deepEqual(errors, [boom, bang]);
  // The server still accepts and serves.
  await assertEchoes(urlOf(server, "/fine"));
  assert.equal(calls, 3);
});

Deno.test("a client that drops ends the handler's read() with a 1006 close message", async () => {
  const seen = Promise.withResolvers<
    { messages: Message[]; closed: unknown }
  >();
  await using server = serve(async (sock) => {
    const messages = await readAll(sock);
    seen.resolve({ messages, closed: await sock.closed });
  });
  const client = await within(RawClient.upgrade(server.addr.port));
  await client.send(clientFrame(0x1, "last words"));
  client.close();
  assert.deepEqual(await within(seen.promise), {
    messages: [{ type: "text", data: "last words" }, {
      type: "close",
      code: 1006,
      reason: "",
    }],
    closed: { code: 1006, reason: "", wasClean: false },
  });
  await waitFor(
    () => server.connections === 0,
    "the server to forget the socket",
  );
});

Deno.test("server.connections counts the open sockets", async () => {
  let signal = Promise.withResolvers<void>();
  await using server = serve(async (sock) => {
    signal.resolve();
    await drain(sock);
  });
  assert.equal(server.connections, 0);
  const a = await within(connect(urlOf(server)));
  await within(signal.promise);
  assert.equal(server.connections, 1);
  signal = Promise.withResolvers<void>();
  const b = await within(connect(urlOf(server)));
  await within(signal.promise);
  assert.equal(server.connections, 2);
  await within(a.close());
  await waitFor(() => server.connections === 1, "connections to drop to 1");
  await within(b.close());
  await waitFor(() => server.connections === 0, "connections to drop to 0");
});

// -- server.close() --

Deno.test("server.close() sends 1001 to open sockets, resolves, and refuses new connections", async () => {
  const server = listen({ addr: "127.0.0.1:0", handler: drain });
  const port = server.addr.port;
  const sockets = [
    await within(connect(urlOf(server))),
    await within(connect(urlOf(server))),
  ];
  await waitFor(() => server.connections === 2, "both sockets to be open");
  const closing = server.close();
  for (const sock of sockets) {
    const msg = await within(sock.read());
    assert.equal(msg?.type, "close");
    assert.equal((msg as { code: number }).code, 1001);
    assert.equal((await within(sock.closed)).code, 1001);
    assert.equal((await sock.closed).wasClean, true);
  }
  await within(closing);
  assert.equal(server.connections, 0);
  await within(server.close());
  await assert.rejects(
    connect(`ws://127.0.0.1:${port}/`),
    (e) => e instanceof WebSocketError && e.code === "CONNECTION_FAILED",
  );
});

Deno.test("server.close() waits at most closeTimeout for a peer that never answers", async () => {
  using time = new FakeTime();
  const server = listen({
    addr: "127.0.0.1:0",
    handler: drain,
    closeTimeout: 200,
  });
  await using client = await within(RawClient.upgrade(server.addr.port));
  await waitFor(() => server.connections === 1, "the socket to be open");
  const start = performance.now();
  const closing = server.close();
  assert.deepEqual(await within(client.readClose()), {
    code: 1001,
    reason: "Server shutting down",
  });
  await time.tickUntil(closing);
  const elapsed = performance.now() - start;
  assert.ok(
    elapsed >= 150 && elapsed < 2000,
    `server.close() took ${elapsed} ms`,
  );
  assert.ok(await within(client.closedByPeer()));
  assert.equal(server.connections, 0);
});

Deno.test("server.close() does not wait for a handler that is stuck elsewhere", async () => {
  const gate = Promise.withResolvers<void>();
  let finished = false;
  const server = listen({
    addr: "127.0.0.1:0",
    async handler() {
      await gate.promise;
      finished = true;
    },
  });
  const sock = await within(connect(urlOf(server)));
  await waitFor(() => server.connections === 1, "the socket to be open");
  await within(server.close());
  assert.equal(finished, false);
  assert.equal((await within(sock.closed)).code, 1001);
  gate.resolve();
  await sock.close();
});

Deno.test("server.close() drops a connection still in its handshake", async () => {
  const server = listen({ addr: "127.0.0.1:0", handler: drain });
  await using client = await within(RawClient.connect(server.addr.port));
  await client.send("GET / HTTP/1.1\r\nHost: x\r\n");
  await sleep(20);
  await within(server.close());
  assert.ok(await within(client.closedByPeer()));
});

// -- The upgrade request --

Deno.test("bytes sent in the same packet as the upgrade request are the first message", async () => {
  const seen = Promise.withResolvers<Message[]>();
  await using server = serve(async (sock) => seen.resolve(await readAll(sock)));
  await using client = await within(RawClient.connect(server.addr.port));
  await client.send(concat(
    utf8(upgradeRequest(server.addr.port)),
    clientFrame(0x1, "early bird"),
    clientFrame(0x2, new Uint8Array([1, 2, 3])),
    clientFrame(0x8, closePayload(1000)),
  ));
  assert.match(await within(client.readHead()), /^HTTP\/1\.1 101 /);
  assert.deepEqual(await within(client.readClose()), {
    code: 1000,
    reason: "",
  });
  assert.deepEqual(await within(seen.promise), [
    { type: "text", data: "early bird" },
    { type: "binary", data: new Uint8Array([1, 2, 3]) },
    { type: "close", code: 1000, reason: "" },
  ]);
});

Deno.test('"Connection: keep-alive, Upgrade" and "Upgrade: WebSocket" are accepted', async () => {
  await using server = serve(echo);
  const port = server.addr.port;
  await using client = await within(RawClient.connect(port));
  await client.send(
    `GET /chat HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n` +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
  );
  const head = await within(client.readHead());
  assert.match(head, /^HTTP\/1\.1 101 /);
  // RFC 6455 1.3: the sample key's accept value.
  assert.match(
    head,
    /\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r\n/i,
  );
  await client.send(clientFrame(0x1, "hi"));
  assert.deepEqual(await within(client.readFrame()), {
    fin: true,
    opcode: 0x1,
    payload: utf8("hi"),
  });
  await client.send(clientFrame(0x8, closePayload(1000)));
  assert.deepEqual(await within(client.readClose()), {
    code: 1000,
    reason: "",
  });
});

Deno.test("the server picks the first offered subprotocol it speaks", async () => {
  const chosen: string[] = [];
  await using server = serve((sock) => {
    chosen.push(sock.protocol);
  }, { protocols: ["b", "c"] });
  const cases: [string[], string][] = [
    [["a", "c", "b"], "c"],
    [["b"], "b"],
    [["x", "y"], ""],
    [[], ""],
  ];
  for (const [offered, expected] of cases) {
    const sock = await within(connect(urlOf(server), { protocols: offered }));
    assert.equal(sock.protocol, expected, `offered ${offered}`);
    assert.equal(
      sock.response?.headers.get("sec-websocket-protocol"),
      expected === "" ? null : expected,
    );
    await within(readAll(sock));
    await sock.close();
  }
  await waitFor(() => chosen.length === cases.length, "every handler");
  assert.deepEqual(chosen, cases.map(([, expected]) => expected));
});

Deno.test("sock.request holds the method, URL and headers of the upgrade request", async () => {
  const request = Promise.withResolvers<Socket["request"]>();
  await using server = serve((sock) => request.resolve(sock.request));
  const sock = await within(
    connect(urlOf(server, "/rooms/1?user=ann"), {
      headers: { "X-Trace": "abc" },
    }),
  );
  const seen = await within(request.promise);
  assert.equal(seen.method, "GET");
  assert.equal(seen.url, `ws://127.0.0.1:${server.addr.port}/rooms/1?user=ann`);
  assert.ok(seen.headers instanceof Headers);
  assert.equal(seen.headers.get("host"), `127.0.0.1:${server.addr.port}`);
  assert.equal(seen.headers.get("upgrade"), "websocket");
  assert.equal(seen.headers.get("sec-websocket-version"), "13");
  assert.equal(seen.headers.get("x-trace"), "abc");
  await within(readAll(sock));
  await sock.close();
});

Deno.test("sock.request, whose headers are built when first read, is a plain { method, url, headers } with one Headers, shared with the upgrade hook", async () => {
  const seen = Promise.withResolvers<Socket["request"]>();
  const hookHeaders: Headers[] = [];
  await using server = serve((sock) => seen.resolve(sock.request), {
    upgrade(req) {
      // Read and changed in the hook: the socket sees the same Headers.
      hookHeaders.push(req.headers);
      req.headers.set("x-user", "ann");
      // Replacing the hook's own leaves the socket's alone, as with a copy.
      const { protocols, ...rest } = req;
      assert.deepEqual(Object.keys(rest), ["method", "url", "headers"]);
      assert.deepEqual(protocols, []);
    },
  });
  const sock = await within(
    connect(urlOf(server, "/a?b=1"), {
      headers: { "X-Trace": "abc", "X-Two": "1" },
    }),
  );
  const request = await within(seen.promise);
  assert.deepEqual(Object.keys(request), ["method", "url", "headers"]);
  const copy = { ...request };
  assert.equal(copy.method, "GET");
  assert.equal(copy.url, `ws://127.0.0.1:${server.addr.port}/a?b=1`);
  assert.equal(copy.headers, request.headers);
  assert.equal(request.headers, hookHeaders[0]);
  assert.equal(request.headers.get("x-user"), "ann");
  assert.equal(request.headers.get("x-trace"), "abc");
  assert.equal(request.headers.get("x-two"), "1");
  assert.deepEqual(JSON.parse(JSON.stringify(request)), {
    method: "GET",
    url: copy.url,
    headers: {},
  });
  // Assignable, as a plain object's property is.
  const other = new Headers({ a: "b" });
  request.headers = other;
  assert.equal(request.headers, other);
  await sock.close();
});

Deno.test("sock.request.headers, first read long after the upgrade, holds every field as sent, repeated ones joined", async () => {
  const seen = Promise.withResolvers<Socket["request"]>();
  await using server = serve(async (sock) => {
    // Let the read loop reuse its buffer before the headers are read.
    assert.deepEqual(await sock.read(), {
      type: "text",
      data: "x".repeat(3000),
    });
    seen.resolve(sock.request);
  });
  await using raw = await RawClient.upgrade(
    server.addr.port,
    `X-Dup: one\r\nx-dup: two\r\nX-Long: ${"v".repeat(500)}\r\n`,
  );
  await raw.send(clientFrame(1, "x".repeat(3000)));
  const request = await within(seen.promise);
  assert.equal(request.headers.get("x-dup"), "one, two");
  assert.equal(request.headers.get("x-long"), "v".repeat(500));
  assert.equal(request.headers.get("upgrade"), "websocket");
  assert.equal(request.headers, request.headers);
});

Deno.test("sock.remoteAddr and sock.localAddr are the two ends of the connection", async () => {
  const addrs = Promise.withResolvers<
    { remote: Deno.NetAddr; local: Deno.NetAddr }
  >();
  await using server = serve((sock) =>
    addrs.resolve({ remote: sock.remoteAddr, local: sock.localAddr })
  );
  const sock = await within(connect(urlOf(server)));
  const { remote, local } = await within(addrs.promise);
  const plain = (a: Deno.NetAddr) => ({
    transport: a.transport,
    hostname: a.hostname,
    port: a.port,
  });
  assert.deepEqual(plain(local), {
    transport: "tcp",
    hostname: "127.0.0.1",
    port: server.addr.port,
  });
  assert.deepEqual(plain(remote), plain(sock.localAddr));
  assert.deepEqual(plain(sock.remoteAddr), plain(local));
  assert.equal(remote.hostname, "127.0.0.1");
  assert.notEqual(remote.port, server.addr.port);
  await within(readAll(sock));
  await sock.close();
});

// -- TLS --

Deno.test("a tls server serves wss:// with the given certificate", async () => {
  const url = Promise.withResolvers<string>();
  await using server = serve(async (sock) => {
    url.resolve(sock.request.url);
    await echo(sock);
  }, { tls: true, certs: [{ cert: CERT, key: KEY }] });
  const sock = await within(
    connect(urlOf(server, "/secure", true), { caCerts: [CERT] }),
  );
  await sock.write("secret", "text");
  assert.deepEqual(await within(sock.read()), { type: "text", data: "secret" });
  assert.equal(
    await within(url.promise),
    `wss://localhost:${server.addr.port}/secure`,
  );
  await within(sock.close());
});

Deno.test("a wss:// server gives back the slot of a TCP connection that never starts TLS at handshakeTimeout", async () => {
  // Hardening II: the deadline starts at accept and covers the TLS
  // handshake. (Deno itself keeps such a socket open until the peer sends
  // or hangs up: closing a TlsConn mid-handshake leaves its handshake task
  // holding the TCP stream, which no API reaches. See the ignored test.)
  using time = new FakeTime();
  await using server = serve(echo, {
    tls: true,
    certs: [{ cert: CERT, key: KEY }],
    handshakeTimeout: 300,
    maxConnections: 2,
  });
  const port = server.addr.port;
  const silent = [
    await Deno.connect({ hostname: "127.0.0.1", port }),
    await Deno.connect({ hostname: "127.0.0.1", port }),
  ];
  try {
    await sleep(100);
    // Both slots are taken: a third connection is refused...
    const refused = await connect(urlOf(server, "/", true), { caCerts: [CERT] })
      .catch((error) => error);
    assert.match(String(refused), /503/);
    // ...until the handshake timeout gives them back.
    await time.tickAsync(400);
    const sock = await within(
      connect(urlOf(server, "/", true), { caCerts: [CERT] }),
    );
    await sock.write("after", "text");
    assert.deepEqual(await within(sock.read()), {
      type: "text",
      data: "after",
    });
    await within(sock.close());
  } finally {
    for (const conn of silent) conn.close();
  }
});

Deno.test({
  name:
    "a wss:// server closes a TCP connection that never starts TLS at handshakeTimeout",
  // Deno 2.9.6 (rustls-tokio-stream): a TlsConn closed during its handshake
  // keeps the TCP socket until the peer sends or hangs up.
  ignore: true,
  async fn() {
    await using server = serve(echo, {
      tls: true,
      certs: [{ cert: CERT, key: KEY }],
      handshakeTimeout: 300,
    });
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.addr.port,
    });
    try {
      const read = conn.read(new Uint8Array(16)).catch(() => null);
      assert.equal(await within(read, "the server to close", 1000), null);
    } finally {
      conn.close();
    }
  },
});

Deno.test("sock.request.url is right for each of consecutive upgrades with the same or other targets and hosts", async () => {
  const urls: string[] = [];
  await using server = serve((sock) => {
    urls.push(sock.request.url);
  });
  const port = server.addr.port;
  const cases: [string, string, string][] = [
    ["/a?x=1", `127.0.0.1:${port}`, `ws://127.0.0.1:${port}/a?x=1`],
    ["/a?x=1", `127.0.0.1:${port}`, `ws://127.0.0.1:${port}/a?x=1`],
    ["/b/../c", `127.0.0.1:${port}`, `ws://127.0.0.1:${port}/c`],
    ["/a?x=1", "Example.COM", "ws://example.com/a?x=1"],
    ["/a?x=1", `127.0.0.1:${port}`, `ws://127.0.0.1:${port}/a?x=1`],
  ];
  for (const [target, host] of cases) {
    await using raw = await RawClient.connect(port);
    await raw.send(
      upgradeRequest(port)
        .replace("GET / ", `GET ${target} `)
        .replace(/Host: [^\r]*/, `Host: ${host}`),
    );
    assert.match(await within(raw.readHead()), /^HTTP\/1.1 101 /);
    await within(raw.readClose());
  }
  assert.deepEqual(urls, cases.map(([, , url]) => url));
});
