/**
 * Server features for applications: the upgrade hook, plain HTTP through
 * `onRequest`, `accept` on your own connections, graceful shutdown with a
 * signal, and `reusePort`. Over real loopback (and Unix) sockets.
 */

import assert from "node:assert/strict";
import {
  accept,
  connect,
  listen,
  type ListenOptions,
  type ServerSocket,
  type Socket,
  type UpgradeRequest,
  WebSocketError,
} from "../mod.ts";
import { FakeTime } from "./_fake_time.ts";
import {
  clientFrame,
  echo,
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

const decoder = new TextDecoder();

/** A raw HTTP response, read until the server closed the connection. */
interface RawResponse {
  statusLine: string;
  status: number;
  headers: Headers;
  body: string;
}

/** Sends raw request bytes and reads the whole response. */
async function rawHttp(
  port: number,
  request: string | Uint8Array,
): Promise<RawResponse> {
  await using client = await within(RawClient.connect(port));
  await client.send(request);
  const text = decoder.decode(await within(client.readToEnd()));
  return parseResponse(text);
}

function parseResponse(text: string): RawResponse {
  const end = text.indexOf("\r\n\r\n");
  assert.ok(end !== -1, `no complete head in ${JSON.stringify(text)}`);
  const [statusLine, ...lines] = text.slice(0, end).split("\r\n");
  const headers = new Headers();
  for (const line of lines) {
    const colon = line.indexOf(":");
    headers.append(line.slice(0, colon), line.slice(colon + 1).trim());
  }
  return {
    statusLine,
    status: Number(statusLine.split(" ")[1]),
    headers,
    body: text.slice(end + 4),
  };
}

/** Collects what `onError` receives. */
function errorLog(): { errors: unknown[]; onError: (e: unknown) => void } {
  const errors: unknown[] = [];
  return { errors, onError: (e) => errors.push(e) };
}

// -- The upgrade hook --

Deno.test("the upgrade hook sees the method, URL, headers, offered subprotocols and remote address before the 101", async () => {
  const seen = Promise.withResolvers<
    { req: UpgradeRequest; remote: Deno.NetAddr; local: Deno.NetAddr }
  >();
  await using server = serve(echo, {
    upgrade(req, info) {
      seen.resolve({ req, remote: info.remoteAddr, local: info.localAddr });
    },
  });
  const sock = await within(
    connect(urlOf(server, "/rooms/7?token=abc"), {
      headers: { Authorization: "Bearer t0ken" },
      protocols: ["chat.v2", "chat.v1"],
    }),
  );
  const { req, remote, local } = await within(seen.promise);
  assert.equal(req.method, "GET");
  assert.equal(
    req.url,
    `ws://127.0.0.1:${server.addr.port}/rooms/7?token=abc`,
  );
  assert.equal(req.headers.get("authorization"), "Bearer t0ken");
  assert.deepEqual(req.protocols, ["chat.v2", "chat.v1"]);
  assert.equal(remote.hostname, "127.0.0.1");
  assert.equal(remote.port, sock.localAddr.port);
  assert.equal(local.port, server.addr.port);
  // Returning nothing accepts with the defaults: no subprotocol here.
  assert.equal(sock.protocol, "");
  await sock.write("still echoing", "text");
  assert.deepEqual(await within(sock.read()), {
    type: "text",
    data: "still echoing",
  });
  await within(sock.close());
});

Deno.test("the upgrade hook rejects with the status, headers and body of its Response", async () => {
  let handled = 0;
  await using server = serve(() => {
    handled++;
  }, {
    upgrade(req) {
      if (req.headers.get("authorization") !== "Bearer good") {
        return new Response("Missing or bad token", {
          status: 401,
          headers: { "WWW-Authenticate": 'Bearer realm="chat"' },
        });
      }
    },
  });
  const port = server.addr.port;
  const response = await rawHttp(port, upgradeRequest(port));
  assert.equal(response.statusLine, "HTTP/1.1 401 Unauthorized");
  assert.equal(
    response.headers.get("www-authenticate"),
    'Bearer realm="chat"',
  );
  assert.equal(response.headers.get("connection"), "close");
  assert.equal(response.headers.get("content-length"), "20");
  assert.equal(response.body, "Missing or bad token");

  const error = await within(connect(urlOf(server)).catch((e) => e));
  assert.ok(error instanceof WebSocketError);
  assert.equal(error.code, "BAD_HANDSHAKE");
  assert.match(error.message, /401 Unauthorized/);

  const sock = await within(
    connect(urlOf(server), { headers: { Authorization: "Bearer good" } }),
  );
  assert.deepEqual(await within(readAll(sock)), [
    { type: "close", code: 1000, reason: "" },
  ]);
  assert.equal(handled, 1);
});

Deno.test("an Origin allow-list in the upgrade hook answers 403 to other origins", async () => {
  const allowed = new Set(["https://app.example"]);
  await using server = serve(echo, {
    upgrade(req) {
      const origin = req.headers.get("origin");
      if (origin !== null && !allowed.has(origin)) {
        return new Response(null, { status: 403 });
      }
    },
  });
  const error = await within(
    connect(urlOf(server), { headers: { Origin: "https://evil.example" } })
      .catch((e) => e),
  );
  assert.ok(error instanceof WebSocketError);
  assert.match(error.message, /403 Forbidden/);
  const sock = await within(
    connect(urlOf(server), { headers: { Origin: "https://app.example" } }),
  );
  await within(sock.close());
});

Deno.test("data from the upgrade hook reaches the handler as sock.data", async () => {
  const seen = Promise.withResolvers<{ user: string; room: number }>();
  await using server = serve((sock) => {
    const data = sock.data as { user: string; room: number };
    seen.resolve(data);
  }, {
    async upgrade(req) {
      await sleep(1);
      const url = new URL(req.url);
      return {
        data: { user: url.searchParams.get("user")!, room: 42 },
      };
    },
  });
  const sock = await within(connect(urlOf(server, "/?user=ann")));
  assert.deepEqual(await within(seen.promise), { user: "ann", room: 42 });
  await within(readAll(sock));
});

Deno.test("sock.data is typed by listen's type parameter and is undefined without a hook", async () => {
  const seen = Promise.withResolvers<string>();
  const server = listen<{ nick: string }>({
    addr: "127.0.0.1:0",
    upgrade: () => ({ data: { nick: "ann" } }),
    handler(sock: ServerSocket<{ nick: string }>) {
      // Typed: no cast needed.
      seen.resolve(sock.data.nick.toUpperCase());
    },
  });
  const sock = await within(connect(urlOf(server)));
  assert.equal(await within(seen.promise), "ANN");
  assert.equal(sock.data, undefined);
  await within(readAll(sock));
  await server.close();
});

Deno.test("the upgrade hook chooses the subprotocol, or none with an empty string", async () => {
  await using server = serve(() => {}, {
    protocols: ["a"],
    upgrade(req) {
      const want = new URL(req.url).searchParams.get("want");
      return want === null ? {} : { protocol: want };
    },
  });
  const cases: [string, string[], string][] = [
    ["/", ["b", "a"], "a"], // the protocols option still applies
    ["/?want=b", ["a", "b"], "b"],
    ["/?want=", ["a", "b"], ""],
  ];
  for (const [path, offered, expected] of cases) {
    const sock = await within(
      connect(urlOf(server, path), { protocols: offered }),
    );
    assert.equal(sock.protocol, expected, path);
    await within(readAll(sock));
  }
});

Deno.test("a subprotocol the client did not offer is a 500, and onError gets a TypeError", async () => {
  const { errors, onError } = errorLog();
  await using server = serve(() => {}, {
    onError,
    upgrade: () => ({ protocol: "mine" }),
  });
  const error = await within(
    connect(urlOf(server), { protocols: ["yours"] }).catch((e) => e),
  );
  assert.ok(error instanceof WebSocketError);
  assert.match(error.message, /500 Internal Server Error/);
  await waitFor(() => errors.length === 1, "onError");
  assert.ok(errors[0] instanceof TypeError);
  assert.match(
    (errors[0] as Error).message,
    /^Invalid upgrade decision: protocol "mine" was not offered by the client, which offered yours$/,
  );
});

Deno.test("an upgrade hook that throws gets the client a 500, and onError the error", async () => {
  const { errors, onError } = errorLog();
  const boom = new Error("database down");
  let calls = 0;
  await using server = serve(echo, {
    onError,
    async upgrade() {
      if (calls++ === 0) throw boom;
      await sleep(1);
      throw boom;
    },
  });
  for (let i = 0; i < 2; i++) {
    const response = await rawHttp(
      server.addr.port,
      upgradeRequest(server.addr.port),
    );
    assert.equal(response.status, 500);
    assert.equal(response.body, "Internal server error\n");
  }
  assert.deepEqual(errors, [boom, boom]);
  assert.equal(server.connections, 0);
});

Deno.test("headers from the upgrade hook go on the 101, but cannot replace the handshake's own", async () => {
  const headers = new Headers();
  headers.append("Set-Cookie", "a=1");
  headers.append("Set-Cookie", "b=2");
  headers.set("X-Served-By", "test");
  headers.set("Sec-WebSocket-Accept", "forged");
  headers.set("Upgrade", "h2c");
  await using server = serve(() => {}, { upgrade: () => ({ headers }) });
  const port = server.addr.port;
  await using client = await within(RawClient.connect(port));
  await client.send(upgradeRequest(port));
  const head = await within(client.readHead());
  assert.match(head, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
  assert.match(head, /\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n/);
  assert.match(head, /\r\nx-served-by: test\r\n/);
  assert.match(head, /\r\nUpgrade: websocket\r\n/);
  assert.match(
    head,
    /\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r\n/,
  );
  assert.doesNotMatch(head, /forged|h2c/);
  assert.deepEqual(await within(client.readClose()), {
    code: 1000,
    reason: "",
  });
});

Deno.test("an upgrade hook slower than handshakeTimeout loses the connection, and the server moves on", async () => {
  using time = new FakeTime();
  const { errors, onError } = errorLog();
  let handled = 0;
  await using server = serve(() => {
    handled++;
  }, {
    onError,
    handshakeTimeout: 150,
    // Never decides.
    upgrade: () => new Promise(() => {}),
  });
  await using client = await within(RawClient.connect(server.addr.port));
  await client.send(upgradeRequest(server.addr.port));
  const start = performance.now();
  assert.equal((await time.tickUntil(client.readToEnd())).length, 0);
  const elapsed = performance.now() - start;
  assert.ok(elapsed >= 100 && elapsed < 2000, `dropped after ${elapsed} ms`);
  assert.equal(handled, 0);
  assert.deepEqual(errors, []);
});

Deno.test("server.close() cuts a connection whose upgrade hook is still deciding", async () => {
  const entered = Promise.withResolvers<void>();
  const server = listen({
    addr: "127.0.0.1:0",
    handler() {},
    upgrade() {
      entered.resolve();
      return new Promise<undefined>(() => {});
    },
  });
  await using client = await within(RawClient.connect(server.addr.port));
  await client.send(upgradeRequest(server.addr.port));
  await within(entered.promise);
  await within(server.close());
  assert.equal((await within(client.readToEnd())).length, 0);
});

// -- Plain HTTP: onRequest --

Deno.test("onRequest serves plain HTTP on the WebSocket port, which still upgrades", async () => {
  const seen: { method: string; url: string; agent: string | null }[] = [];
  let remote: Deno.NetAddr | undefined;
  await using server = serve(echo, {
    onRequest(req, info) {
      remote = info.remoteAddr;
      seen.push({
        method: req.method,
        url: req.url,
        agent: req.headers.get("x-agent"),
      });
      return new Response("<h1>hello</h1>", {
        status: 200,
        headers: { "content-type": "text/html; charset=utf-8", "x-a": "b" },
      });
    },
  });
  const base = `127.0.0.1:${server.addr.port}`;
  const response = await within(
    fetch(`http://${base}/page?x=1`, { headers: { "X-Agent": "test" } }),
  );
  assert.equal(response.status, 200);
  assert.equal(
    response.headers.get("content-type"),
    "text/html; charset=utf-8",
  );
  assert.equal(response.headers.get("x-a"), "b");
  assert.equal(response.headers.get("content-length"), "14");
  assert.equal(response.headers.get("connection"), "close");
  assert.equal(await response.text(), "<h1>hello</h1>");
  assert.deepEqual(seen, [{
    method: "GET",
    url: `http://${base}/page?x=1`,
    agent: "test",
  }]);
  assert.equal(remote?.hostname, "127.0.0.1");
  // The same port still speaks WebSocket.
  const sock = await within(connect(`ws://${base}/`));
  await sock.write("ws too", "text");
  assert.deepEqual(await within(sock.read()), { type: "text", data: "ws too" });
  await within(sock.close());
});

Deno.test("onRequest gets the body of a POST, up to maxRequestBodySize", async () => {
  await using server = serve(() => {}, {
    maxRequestBodySize: 1000,
    async onRequest(req) {
      const body = await req.text();
      return Response.json({ method: req.method, body, length: body.length });
    },
  });
  const url = `http://127.0.0.1:${server.addr.port}/echo`;
  const body = "é".repeat(500); // 1000 bytes of UTF-8
  const response = await within(fetch(url, { method: "POST", body }));
  assert.deepEqual(await response.json(), {
    method: "POST",
    body,
    length: 500,
  });
});

Deno.test("a Content-Length over maxRequestBodySize gets 413 without calling onRequest", async () => {
  let calls = 0;
  await using server = serve(() => {}, {
    maxRequestBodySize: 100,
    onRequest() {
      calls++;
      return new Response("ok");
    },
  });
  const port = server.addr.port;
  const response = await rawHttp(
    port,
    `POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 101\r\n\r\n${
      "x".repeat(101)
    }`,
  );
  assert.equal(response.statusLine, "HTTP/1.1 413 Content Too Large");
  assert.equal(
    response.body,
    "Request body too large: limit is 100 bytes, Content-Length is 101\n",
  );
  assert.equal(calls, 0);
  // Exactly at the limit is fine.
  const fine = await rawHttp(
    port,
    `POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n${
      "x".repeat(100)
    }`,
  );
  assert.equal(fine.status, 200);
  assert.equal(calls, 1);
});

Deno.test("a chunked body is decoded, and one that grows past maxRequestBodySize gets 413", async () => {
  const bodies: string[] = [];
  await using server = serve(() => {}, {
    maxRequestBodySize: 10,
    async onRequest(req) {
      bodies.push(await req.text());
      return new Response(null, { status: 204 });
    },
  });
  const port = server.addr.port;
  const head =
    "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  const ok = await rawHttp(
    port,
    head + "4;ext=1\r\nWiki\r\n6\r\npedia!\r\n0\r\nX-Trailer: t\r\n\r\n",
  );
  assert.equal(ok.statusLine, "HTTP/1.1 204 No Content");
  assert.equal(ok.headers.get("content-length"), null);
  assert.equal(ok.body, "");
  assert.deepEqual(bodies, ["Wikipedia!"]);

  const big = await rawHttp(
    port,
    head + "6\r\nabcdef\r\n5\r\nghijk\r\n0\r\n\r\n",
  );
  assert.equal(big.status, 413);
  assert.equal(big.body, "Request body too large: limit is 10 bytes\n");
  assert.equal(bodies.length, 1);
});

Deno.test("bodies framed wrongly get 400 or 501 without calling onRequest", async () => {
  let calls = 0;
  await using server = serve(() => {}, {
    handshakeTimeout: 1000,
    onRequest() {
      calls++;
      return new Response("ok");
    },
  });
  const port = server.addr.port;
  const cases: [string, number, RegExp][] = [
    ["Content-Length: 12abc\r\n\r\n", 400, /^Invalid Content-Length/],
    ["Content-Length: 3, 4\r\n\r\nabcd", 400, /^Invalid Content-Length/],
    [
      "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
      400,
      /both Transfer-Encoding and Content-Length/,
    ],
    ["Transfer-Encoding: gzip, chunked\r\n\r\n", 501, /transfer coding/],
    ["Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400, /^Invalid chunk size/],
    [
      "Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
      400,
      /not followed by CRLF/,
    ],
  ];
  for (const [rest, status, message] of cases) {
    const response = await rawHttp(
      port,
      `POST / HTTP/1.1\r\nHost: x\r\n${rest}`,
    );
    assert.equal(response.status, status, rest);
    assert.match(response.body, message, rest);
  }
  // A body cut short by the client: 400 once it hangs up.
  await using client = await within(RawClient.connect(port));
  await client.send(
    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
  );
  await client.conn.closeWrite();
  const cut = parseResponse(decoder.decode(await within(client.readToEnd())));
  assert.equal(cut.status, 400);
  assert.equal(calls, 0);
});

Deno.test("Expect: 100-continue gets 100 Continue before the body is sent", async () => {
  await using server = serve(() => {}, {
    onRequest: async (req) => new Response(`got ${await req.text()}`),
  });
  await using client = await within(RawClient.connect(server.addr.port));
  await client.send(
    "PUT /f HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
  );
  assert.equal(
    await within(client.readHead()),
    "HTTP/1.1 100 Continue\r\n\r\n",
  );
  await client.send("hello");
  const response = parseResponse(
    decoder.decode(await within(client.readToEnd())),
  );
  assert.equal(response.status, 200);
  assert.equal(response.body, "got hello");
});

Deno.test("a HEAD request gets the headers and Content-Length without the body", async () => {
  await using server = serve(() => {}, {
    onRequest: () => new Response("twelve bytes"),
  });
  const response = await rawHttp(
    server.addr.port,
    "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
  );
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-length"), "12");
  assert.equal(response.body, "");
});

Deno.test("onRequest that throws or returns no Response gets the client a 500, and onError the error", async () => {
  const { errors, onError } = errorLog();
  const boom = new Error("template missing");
  await using server = serve(() => {}, {
    onError,
    onRequest(req) {
      if (req.url.endsWith("/throw")) throw boom;
      if (req.url.endsWith("/reject")) return Promise.reject(boom);
      return "not a response" as unknown as Response;
    },
  });
  for (const path of ["/throw", "/reject", "/wrong"]) {
    const response = await within(
      fetch(`http://127.0.0.1:${server.addr.port}${path}`),
    );
    assert.equal(response.status, 500, path);
    assert.equal(await response.text(), "Internal server error\n");
  }
  assert.equal(errors[0], boom);
  assert.equal(errors[1], boom);
  assert.ok(errors[2] instanceof TypeError);
  assert.match(
    (errors[2] as Error).message,
    /^Invalid onRequest result: expected a Response, received string$/,
  );
});

Deno.test("a Response whose body fails gets the client a 500, and onError the error", async () => {
  const { errors, onError } = errorLog();
  const broken = new Error("disk gone");
  await using server = serve(() => {}, {
    onError,
    onRequest: () =>
      new Response(
        new ReadableStream({
          pull(controller) {
            controller.error(broken);
          },
        }),
      ),
  });
  const response = await rawHttp(
    server.addr.port,
    "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
  );
  assert.equal(response.status, 500);
  assert.deepEqual(errors, [broken]);
});

Deno.test("a client still sending a body that is too large gets its 413", async () => {
  await using server = serve(() => {}, {
    maxRequestBodySize: 1000,
    onRequest: () => new Response("never"),
  });
  await using client = await within(RawClient.connect(server.addr.port));
  const size = 512 * 1024;
  await client.send(
    `POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ${size}\r\n\r\n`,
  );
  // The body goes out while the server answers; the server reads and
  // drops what arrives before it closes.
  const sending = client.send(new Uint8Array(size)).catch(() => {});
  const response = parseResponse(
    decoder.decode(await within(client.readToEnd())),
  );
  await within(sending);
  assert.equal(response.status, 413);
});

Deno.test("without onRequest, a plain request gets 426", async () => {
  await using server = serve(() => {});
  const response = await rawHttp(
    server.addr.port,
    "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
  );
  assert.equal(response.status, 426);
});

// -- accept() --

Deno.test("accept() upgrades a connection from your own listener", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    const sock = await accept(await listener.accept(), {
      protocols: ["p"],
      upgrade: (req) => ({ data: new URL(req.url).pathname }),
    });
    assert.ok(sock !== null);
    assert.equal(sock.data, "/mine");
    assert.equal(sock.protocol, "p");
    await echo(sock);
    return await sock.closed;
  })();
  const sock = await within(
    connect(`ws://127.0.0.1:${listener.addr.port}/mine`, { protocols: ["p"] }),
  );
  await sock.write("yours", "text");
  assert.deepEqual(await within(sock.read()), { type: "text", data: "yours" });
  await within(sock.close());
  assert.equal((await within(served)).code, 1000);
});

Deno.test("accept() returns null for a connection it answered with HTTP, and closes it", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  const options = {
    onRequest: () => new Response("page"),
    upgrade: (req: UpgradeRequest) =>
      req.url.endsWith("/no") ? new Response("no", { status: 403 }) : {},
  };
  const requests: [string, number][] = [
    ["GET / HTTP/1.1\r\nHost: x\r\n\r\n", 200],
    [upgradeRequest(port).replace("GET /", "GET /no"), 403],
    ["garbage\r\n\r\n", 400],
  ];
  for (const [request, status] of requests) {
    const result = (async () => accept(await listener.accept(), options))();
    const response = await rawHttp(port, request);
    assert.equal(response.status, status);
    assert.equal(await within(result), null);
  }
});

Deno.test("accept() serves a WebSocket on a Unix socket", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/ws.sock`;
  try {
    using listener = Deno.listen({ transport: "unix", path });
    const served = (async () => {
      const sock = await accept(await listener.accept());
      assert.ok(sock !== null);
      assert.equal(sock.request.url, "ws://localhost/unix");
      await echo(sock);
    })();
    using conn = await Deno.connect({ transport: "unix", path });
    const write = async (bytes: Uint8Array) => {
      for (let off = 0; off < bytes.length;) {
        off += await conn.write(bytes.subarray(off));
      }
    };
    await write(utf8(
      upgradeRequest(0).replace("Host: 127.0.0.1:0", "Host: localhost")
        .replace("GET /", "GET /unix"),
    ));
    await write(clientFrame(0x1, "over unix"));
    // The 101 head, then the echoed frame.
    let received = new Uint8Array(0);
    const expected = "over unix";
    while (!decoder.decode(received).endsWith(expected)) {
      const chunk = new Uint8Array(1024);
      const n = await within(conn.read(chunk));
      assert.ok(n !== null, "the connection ended early");
      const next = new Uint8Array(received.length + n);
      next.set(received);
      next.set(chunk.subarray(0, n), received.length);
      received = next;
    }
    const text = decoder.decode(received);
    assert.match(text, /^HTTP\/1\.1 101 /);
    const frame = received.subarray(received.length - expected.length - 2);
    assert.deepEqual([...frame.subarray(0, 2)], [0x81, expected.length]);
    await write(clientFrame(0x8, new Uint8Array([0x03, 0xe8])));
    await within(served);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("accept() rejects with a TypeError for something that is not a connection", async () => {
  for (const conn of [null, {}, "conn"]) {
    await assert.rejects(
      accept(conn as unknown as Deno.Conn),
      (e: unknown) => e instanceof TypeError && /\bconn\b/.test(e.message),
    );
  }
});

Deno.test("accept() rejects with a TypeError naming a bad option, and leaves the connection open", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  using client = await Deno.connect({ port: listener.addr.port });
  using conn = await listener.accept();
  await assert.rejects(
    accept(conn, { upgrade: "yes" as unknown as undefined }),
    (e: unknown) => e instanceof TypeError && /\bupgrade\b/.test(e.message),
  );
  await assert.rejects(
    accept(conn, { maxRequestBodySize: -1 }),
    (e: unknown) =>
      e instanceof TypeError && /\bmaxRequestBodySize\b/.test(e.message),
  );
  await assert.rejects(
    accept(conn, { topics: {} as never }),
    (e: unknown) => e instanceof TypeError && /\btopics\b/.test(e.message),
  );
  assert.ok(client);
});

// -- listen() options --

Deno.test("listen() throws a TypeError naming each new option when it is invalid", () => {
  const bad: [Partial<ListenOptions>, string][] = [
    [{ upgrade: 1 as never }, "upgrade"],
    [{ onRequest: "page" as never }, "onRequest"],
    [{ maxRequestBodySize: 0 }, "maxRequestBodySize"],
    [{ maxPublishBacklog: -5 }, "maxPublishBacklog"],
    [{ signal: "stop" as never }, "signal"],
    [{ reusePort: "yes" as never }, "reusePort"],
  ];
  for (const [options, name] of bad) {
    assert.throws(
      () => listen({ addr: "127.0.0.1:0", handler() {}, ...options }),
      (e: unknown) =>
        e instanceof TypeError && new RegExp(`\\b${name}\\b`).test(e.message),
      name,
    );
  }
});

// -- Graceful shutdown --

Deno.test("aborting the signal closes the server: 1001 to open sockets, then finished resolves", async () => {
  const controller = new AbortController();
  const server = listen({
    addr: "127.0.0.1:0",
    handler: echo,
    signal: controller.signal,
  });
  const sock = await within(connect(urlOf(server)));
  await waitFor(() => server.connections === 1, "the socket to be open");
  controller.abort();
  assert.deepEqual(await within(readAll(sock)), [
    { type: "close", code: 1001, reason: "Server shutting down" },
  ]);
  await within(server.finished);
  assert.equal(server.connections, 0);
  await assert.rejects(
    connect(urlOf(server)),
    (e) => e instanceof WebSocketError && e.code === "CONNECTION_FAILED",
  );
  // close() afterwards is the same finished shutdown.
  await within(server.close());
});

Deno.test("a signal that is already aborted closes the server at once", async () => {
  const server = listen({
    addr: "127.0.0.1:0",
    handler() {},
    signal: AbortSignal.abort(),
  });
  await within(server.finished);
  await assert.rejects(
    connect(urlOf(server)),
    (e) => e instanceof WebSocketError && e.code === "CONNECTION_FAILED",
  );
});

Deno.test("server.close() lets a plain request in onRequest finish", async () => {
  const entered = Promise.withResolvers<void>();
  const release = Promise.withResolvers<void>();
  const server = listen({
    addr: "127.0.0.1:0",
    handler() {},
    async onRequest() {
      entered.resolve();
      await release.promise;
      return new Response("finished");
    },
  });
  const response = fetch(`http://127.0.0.1:${server.addr.port}/slow`);
  await within(entered.promise);
  const closing = server.close();
  await sleep(20);
  release.resolve();
  const res = await within(response);
  assert.equal(await res.text(), "finished");
  await within(closing);
});

Deno.test("server.close() cuts a request still in onRequest after closeTimeout, aborting request.signal", async () => {
  using time = new FakeTime();
  const aborted = Promise.withResolvers<void>();
  const server = listen({
    addr: "127.0.0.1:0",
    handler() {},
    closeTimeout: 100,
    onRequest(req) {
      req.signal.addEventListener("abort", () => aborted.resolve());
      return new Promise(() => {}); // never answers
    },
  });
  await using client = await within(RawClient.connect(server.addr.port));
  await client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  await sleep(20);
  const start = performance.now();
  await time.tickUntil(server.close());
  const elapsed = performance.now() - start;
  assert.ok(elapsed >= 80 && elapsed < 2000, `closed after ${elapsed} ms`);
  await within(aborted.promise);
  assert.equal((await within(client.readToEnd())).length, 0);
});

// -- reusePort --

const UNSTABLE_NET =
  typeof (Deno as { listenDatagram?: unknown }).listenDatagram === "function";

Deno.test({
  name:
    "reusePort without --unstable-net throws a TypeError that names the flag",
  ignore: UNSTABLE_NET,
  fn() {
    assert.throws(
      () => listen({ addr: "127.0.0.1:0", handler() {}, reusePort: true }),
      (e: unknown) =>
        e instanceof TypeError && /reusePort/.test(e.message) &&
        /--unstable-net/.test(e.message),
    );
  },
});

Deno.test({
  name:
    "examples/multicore_server.ts runs one server per worker on one port with reusePort, and a publish reaches every worker's sockets",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const script = new URL("../examples/multicore_server.ts", import.meta.url);
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--unstable-net",
        "--allow-net",
        "--allow-env",
        "--allow-read",
        script.pathname,
      ],
      env: { PORT: "0", WORKERS: "2", NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let output = "";
    const listening = Promise.withResolvers<number>();
    const drain = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream) {
        output += decoder.decode(chunk, { stream: true });
        const match = /listening on ws:\/\/127\.0\.0\.1:(\d+)/.exec(output);
        if (match) listening.resolve(Number(match[1]));
      }
    };
    const drained = Promise.all([drain(child.stdout), drain(child.stderr)])
      .then(() => listening.reject(new Error(`Exited early:\n${output}`)));
    try {
      const port = await within(listening.promise, "the workers to listen");
      assert.match(output, /^2 workers listening/);
      // Two listeners on one port: a plain listen() there is refused.
      assert.throws(
        () => listen({ addr: `127.0.0.1:${port}`, handler() {} }),
        Deno.errors.AddrInUse,
      );
      const workers = new Set<string>();
      for (let i = 0; i < 40 && workers.size < 2; i++) {
        const sock = await within(connect(`ws://127.0.0.1:${port}`));
        await sock.write("hi", "text");
        const msg = await within(sock.read());
        assert.equal(msg?.type, "text");
        const data = (msg as { data: string }).data;
        assert.match(data, /^worker [12]: hi$/);
        workers.add(data);
        await within(sock.close());
      }
      // The kernel hashes each connection to one listener: with 40 tries
      // both workers are all but certain to have served.
      assert.equal(workers.size, 2, [...workers].join(", "));
      // A publish in one worker reaches the sockets of both (workerBroker).
      const byWorker = new Map<string, Socket>();
      const extra: Socket[] = [];
      for (let i = 0; i < 40 && byWorker.size < 2; i++) {
        const sock = await within(connect(`ws://127.0.0.1:${port}`));
        await sock.write("who", "text");
        const msg = await within(sock.read()) as { data: string };
        const worker = msg.data.slice(0, "worker 1".length);
        if (byWorker.has(worker)) extra.push(sock);
        else byWorker.set(worker, sock);
      }
      for (const sock of extra) await within(sock.close());
      const [first, second] = [...byWorker.values()];
      await first.write("/all hello", "text");
      for (const sock of [first, second]) {
        const msg = await within(sock.read()) as { data: string };
        assert.match(msg.data, /^worker [12] to all: hello$/);
        await within(sock.close());
      }
    } finally {
      child.kill("SIGTERM");
      const status = await within(child.status, "the example to exit");
      await drained.catch(() => {});
      assert.equal(status.code, 0, output);
    }
  },
});

Deno.test("headers the upgrade hook adds reach the client in the 101 byte for byte, ASCII or not", async () => {
  await using server = serve(echo, {
    upgrade: (req) => ({
      headers: new URL(req.url).pathname === "/ascii"
        ? { "X-Room": "lobby-7" }
        : { "X-Room": "caf\u00e9" },
    }),
  });
  for (
    const [path, expected] of [
      ["/ascii", "x-room: lobby-7\r\n"],
      // A byte string header value goes out as its UTF-8 bytes (read back
      // here as UTF-8).
      ["/latin1", "x-room: caf\u00e9\r\n"],
    ]
  ) {
    await using raw = await RawClient.connect(server.addr.port);
    await raw.send(
      upgradeRequest(server.addr.port).replace("GET /", `GET ${path}`),
    );
    const head = await within(raw.readHead());
    assert.match(head, /^HTTP\/1.1 101 Switching Protocols\r\n/);
    assert.ok(head.includes(expected), `${path}: ${JSON.stringify(head)}`);
  }
});
