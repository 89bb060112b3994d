/**
 * `onRequest` as an HTTP/1.1 server (issue 14): keep-alive, pipelining,
 * streamed response and request bodies, `req.signal`, HEAD,
 * `Expect: 100-continue`, and an upgrade after plain requests, checked
 * byte for byte over real loopback sockets.
 */

import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { get, HttpClient } from "./_http_client.ts";
import {
  clientFrame,
  echo,
  serve,
  sleep as delay,
  within,
} from "./_helpers.ts";

const encoder = new TextEncoder();

/** A server whose onRequest answers `path` in the body. */
function pathServer(options: Parameters<typeof serve>[1] = {}) {
  return serve(echo, {
    onRequest: (req) => new Response(`path ${new URL(req.url).pathname}`),
    ...options,
  });
}

// -- Keep-alive --

Deno.test("one connection carries many requests, and closes after keepAliveTimeout idle", async () => {
  await using server = pathServer({ keepAliveTimeout: 150 });
  await using client = await within(HttpClient.connect(server.addr.port));
  for (const path of ["/a", "/b", "/c"]) {
    await client.send(get(path));
    const response = await within(client.readResponse());
    assert.equal(response.statusLine, "HTTP/1.1 200 OK");
    assert.equal(response.body, `path ${path}`);
    assert.equal(
      response.headers.get("content-length"),
      String(response.body.length),
    );
    assert.equal(response.headers.get("connection"), null);
    assert.ok(response.headers.get("date")?.endsWith(" GMT"));
  }
  const start = performance.now();
  assert.ok(await within(client.closedByServer()));
  const idle = performance.now() - start;
  assert.ok(idle >= 100 && idle < 2000, `closed after ${idle} ms idle`);
});

Deno.test("fetch reuses the connection for requests in a row", async () => {
  const ports = new Set<number>();
  await using server = serve(() => {}, {
    onRequest(_req, info) {
      ports.add(info.remoteAddr.port);
      return Response.json({ ok: true });
    },
  });
  for (let i = 0; i < 5; i++) {
    const response = await within(
      fetch(`http://127.0.0.1:${server.addr.port}/${i}`),
    );
    assert.deepEqual(await response.json(), { ok: true });
  }
  assert.equal(ports.size, 1);
});

Deno.test("pipelined requests are answered in order, a slow one holding back the next", async () => {
  await using server = serve(() => {}, {
    async onRequest(req) {
      const path = new URL(req.url).pathname;
      if (path === "/slow") await delay(50);
      return new Response(path);
    },
  });
  await using client = await within(HttpClient.connect(server.addr.port));
  await client.send(get("/slow") + get("/fast") + get("/last"));
  const bodies = [];
  for (let i = 0; i < 3; i++) {
    bodies.push((await within(client.readResponse())).body);
  }
  assert.deepEqual(bodies, ["/slow", "/fast", "/last"]);
});

Deno.test("Connection: close is honoured: the response says close, and the server closes", async () => {
  await using server = pathServer();
  await using client = await within(HttpClient.connect(server.addr.port));
  await client.send(get("/bye", "Connection: close\r\n") + get("/never"));
  const response = await within(client.readResponse());
  assert.equal(response.body, "path /bye");
  assert.equal(response.headers.get("connection"), "close");
  assert.ok(await within(client.closedByServer()));
});

Deno.test("HTTP/1.0 closes unless it asks for keep-alive, and never gets chunked", async () => {
  await using server = serve(() => {}, {
    onRequest: (req) =>
      new URL(req.url).pathname === "/stream"
        ? new Response(
          ReadableStream.from(["a", "b"]).pipeThrough(new TextEncoderStream()),
        )
        : new Response("ten bytes!"),
  });
  const port = server.addr.port;
  {
    await using client = await within(HttpClient.connect(port));
    await client.send("GET / HTTP/1.0\r\n\r\n");
    const response = await within(client.readResponse());
    assert.equal(response.body, "ten bytes!");
    assert.equal(response.headers.get("connection"), "close");
    assert.ok(await within(client.closedByServer()));
  }
  {
    await using client = await within(HttpClient.connect(port));
    const keep = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    await client.send(keep);
    const first = await within(client.readResponse());
    assert.equal(first.headers.get("connection"), "keep-alive");
    await client.send(keep.replace("/", "/stream"));
    // No length known, no chunked coding in HTTP/1.0: the close ends it.
    const streamed = await within(client.readResponse());
    assert.equal(streamed.headers.get("transfer-encoding"), null);
    assert.equal(streamed.headers.get("connection"), "close");
    assert.equal(streamed.body, "ab");
  }
});

Deno.test("maxRequestsPerConnection: the last request allowed gets Connection: close", async () => {
  await using server = pathServer({ maxRequestsPerConnection: 2 });
  await using client = await within(HttpClient.connect(server.addr.port));
  await client.send(get("/1") + get("/2"));
  const first = await within(client.readResponse());
  const second = await within(client.readResponse());
  assert.equal(first.headers.get("connection"), null);
  assert.equal(second.headers.get("connection"), "close");
  assert.equal(second.body, "path /2");
  assert.ok(await within(client.closedByServer()));
});

Deno.test("server.close() closes idle kept-alive connections at once", async () => {
  const server = pathServer({ keepAliveTimeout: 60_000 });
  await using client = await within(HttpClient.connect(server.addr.port));
  await client.send(get("/"));
  await within(client.readResponse());
  const start = performance.now();
  await within(server.close());
  assert.ok(performance.now() - start < 1000);
  assert.ok(await within(client.closedByServer()));
});

Deno.test("a request that comes in during shutdown is answered with Connection: close", async () => {
  const entered = Promise.withResolvers<void>();
  const release = Promise.withResolvers<void>();
  const server = serve(() => {}, {
    async onRequest() {
      entered.resolve();
      await release.promise;
      return new Response("done");
    },
  });
  await using client = await within(HttpClient.connect(server.addr.port));
  await client.send(get("/"));
  await within(entered.promise);
  const closing = server.close();
  release.resolve();
  const response = await within(client.readResponse());
  assert.equal(response.body, "done");
  assert.equal(response.headers.get("connection"), "close");
  await within(closing);
});

// -- Response bodies --

Deno.test("a streamed body goes out chunked, each chunk when it is enqueued", async () => {
  const next = Promise.withResolvers<void>();
  await using server = serve(() => {}, {
    onRequest: () =>
      new Response(
        new ReadableStream({
          async start(controller) {
            controller.enqueue(encoder.encode("data: one\n\n"));
            await next.promise;
            controller.enqueue(encoder.encode("data: two\n\n"));
            controller.close();
          },
        }),
        { headers: { "content-type": "text/event-stream" } },
      ),
  });
  await using client = await within(HttpClient.connect(server.addr.port));
  await client.send(get("/events"));
  const head = await within(client.readHead());
  assert.equal(head.headers.get("transfer-encoding"), "chunked");
  assert.equal(head.headers.get("content-length"), null);
  assert.equal(head.headers.get("content-type"), "text/event-stream");
  // The first event arrives while the second is not yet produced.
  assert.equal(
    new TextDecoder().decode((await within(client.readChunk()))!),
    "data: one\n\n",
  );
  next.resolve();
  assert.equal(
    new TextDecoder().decode((await within(client.readChunk()))!),
    "data: two\n\n",
  );
  assert.equal(await within(client.readChunk()), null);
  // And the connection goes on.
  await client.send(get("/again"));
  assert.equal((await within(client.readResponse())).status, 200);
});

Deno.test("the head of a streamed body goes out before its first chunk is ready", async () => {
  const first = Promise.withResolvers<void>();
  await using server = serve(() => {}, {
    onRequest: () =>
      new Response(
        new ReadableStream({
          async pull(controller) {
            await first.promise;
            controller.enqueue(encoder.encode("late"));
            controller.close();
          },
        }),
      ),
  });
  await using client = await within(HttpClient.connect(server.addr.port));
  await client.send(get("/"));
  const head = await within(client.readHead());
  assert.equal(head.status, 200);
  first.resolve();
  assert.equal(
    new TextDecoder().decode((await within(client.readChunk()))!),
    "late",
  );
  assert.equal(await within(client.readChunk()), null);
});

Deno.test("a slow client holds a streamed body back: pull waits, memory stays bounded", async () => {
  const piece = new Uint8Array(64 * 1024);
  let pulled = 0;
  const total = 64 * 1024 * 1024;
  await using server = serve(() => {}, {
    onRequest: () =>
      new Response(
        new ReadableStream({
          pull(controller) {
            if (pulled >= total) return controller.close();
            pulled += piece.length;
            controller.enqueue(piece);
          },
        }),
      ),
  });
  await using client = await within(HttpClient.connect(server.addr.port));
  await client.send(get("/big"));
  await within(client.readHead());
  await delay(300);
  // Only what fits in the socket buffers was produced, far from all of it.
  assert.ok(pulled < 24 * 1024 * 1024, `pulled ${pulled} bytes unread`);
  let received = 0;
  for (
    let c = await within(client.readChunk());
    c !== null;
    c = await within(client.readChunk())
  ) {
    received += c.length;
  }
  assert.equal(received, total);
});

Deno.test("a Content-Length the app sets is kept, and the body streamed under it", async () => {
  await using server = serve(() => {}, {
    onRequest: () =>
      new Response(
        ReadableStream.from([encoder.encode("abc"), encoder.encode("def")]),
        {
          headers: { "content-length": "6" },
        },
      ),
  });
  await using client = await within(HttpClient.connect(server.addr.port));
  await client.send(get("/") + get("/"));
  for (let i = 0; i < 2; i++) {
    const response = await within(client.readResponse());
    assert.equal(response.headers.get("content-length"), "6");
    assert.equal(response.headers.get("transfer-encoding"), null);
    assert.equal(response.body, "abcdef");
  }
});

Deno.test("a body that fails after its head went out ends the connection, and onError gets the error", async () => {
  const errors: unknown[] = [];
  const broken = new Error("upstream gone");
  await using server = serve(() => {}, {
    onError: (e) => errors.push(e),
    onRequest: () =>
      new Response(
        new ReadableStream({
          async start(controller) {
            controller.enqueue(encoder.encode("partial"));
            await delay(10);
            controller.error(broken);
          },
        }),
      ),
  });
  await using client = await within(HttpClient.connect(server.addr.port));
  await client.send(get("/"));
  const head = await within(client.readHead());
  assert.equal(head.headers.get("transfer-encoding"), "chunked");
  assert.equal(
    new TextDecoder().decode((await within(client.readChunk()))!),
    "partial",
  );
  // No last chunk: the client can tell the body was cut.
  await within(client.readToEnd());
  assert.deepEqual(errors, [broken]);
});

// -- HEAD --

Deno.test("HEAD gets the head without a body, and the connection goes on", async () => {
  await using server = serve(() => {}, {
    onRequest: (req) =>
      new URL(req.url).pathname === "/stream"
        ? new Response(new ReadableStream({ pull() {} }))
        : new Response("twelve bytes"),
  });
  await using client = await within(HttpClient.connect(server.addr.port));
  await client.send(
    "HEAD / HTTP/1.1\r\nHost: x\r\n\r\nHEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n" +
      get("/"),
  );
  const head = await within(client.readResponse("HEAD"));
  assert.equal(head.headers.get("content-length"), "12");
  assert.equal(head.body, "");
  const streamed = await within(client.readResponse("HEAD"));
  assert.equal(streamed.status, 200);
  assert.equal(streamed.body, "");
  const full = await within(client.readResponse());
  assert.equal(full.body, "twelve bytes");
});

// -- Request bodies --

Deno.test("req.body streams: the app reads the first chunk before the client sends the second", async () => {
  const gotFirst = Promise.withResolvers<void>();
  await using server = serve(() => {}, {
    async onRequest(req) {
      const got: string[] = [];
      const decoder = new TextDecoder();
      for await (const bytes of req.body!) {
        got.push(decoder.decode(bytes));
        gotFirst.resolve();
      }
      return new Response(got.join("|"));
    },
  });
  await using client = await within(HttpClient.connect(server.addr.port));
  await client.send(
    "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",
  );
  await within(gotFirst.promise);
  await client.send("6\r\nsecond\r\n0\r\n\r\n");
  const response = await within(client.readResponse());
  assert.equal(response.body, "first|second");
  // The connection carries the next request.
  await client.send(
    "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
  );
  assert.equal((await within(client.readResponse())).body, "abc");
});

Deno.test("a body past maxRequestBodySize gets 413 after the app read part of it", async () => {
  let read = 0;
  await using server = serve(() => {}, {
    maxRequestBodySize: 100,
    async onRequest(req) {
      const reader = req.body!.getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          read += value.length;
        }
      } catch {
        return new Response("app saw the error", { status: 400 });
      }
      return new Response("never");
    },
  });
  await using client = await within(HttpClient.connect(server.addr.port));
  await client.send(
    "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" +
      "x".repeat(64) + "\r\n40\r\n" + "y".repeat(64) + "\r\n0\r\n\r\n",
  );
  const response = await within(client.readResponse());
  assert.equal(response.status, 413);
  assert.equal(response.headers.get("connection"), "close");
  assert.equal(read, 64);
  assert.ok(await within(client.closedByServer()));
});

Deno.test("a body the app does not read is dropped, and the connection goes on", async () => {
  await using server = pathServer();
  await using client = await within(HttpClient.connect(server.addr.port));
  await client.send(
    "POST /ignored HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" +
      "GET /with-body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" +
      get("/next"),
  );
  assert.equal((await within(client.readResponse())).body, "path /ignored");
  assert.equal((await within(client.readResponse())).body, "path /with-body");
  assert.equal((await within(client.readResponse())).body, "path /next");
});

Deno.test("Expect: 100-continue: no 100 when the app answers without reading; the connection then closes", async () => {
  await using server = serve(() => {}, {
    onRequest: () => new Response("no thanks", { status: 403 }),
  });
  await using client = await within(HttpClient.connect(server.addr.port));
  await client.send(
    "PUT /f HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
  );
  const response = await within(client.readResponse());
  assert.equal(response.statusLine, "HTTP/1.1 403 Forbidden");
  assert.equal(response.headers.get("connection"), "close");
  assert.equal(response.body, "no thanks");
  assert.ok(await within(client.closedByServer()));
});

Deno.test("Expect: 100-continue on a kept-alive connection: 100, then the response, then the next", async () => {
  await using server = serve(() => {}, {
    onRequest: async (req) => new Response(`got ${await req.text()}`),
  });
  await using client = await within(HttpClient.connect(server.addr.port));
  await client.send(
    "PUT /f HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n",
  );
  const interim = await within(client.readHead());
  assert.equal(interim.statusLine, "HTTP/1.1 100 Continue");
  await client.send("ok");
  assert.equal((await within(client.readResponse())).body, "got ok");
  await client.send(get("/"));
  assert.equal((await within(client.readResponse())).body, "got ");
});

Deno.test("a client that stalls inside a body is cut at handshakeTimeout", async () => {
  const failed = Promise.withResolvers<unknown>();
  await using server = serve(() => {}, {
    handshakeTimeout: 100,
    async onRequest(req) {
      await req.text().catch((e) => failed.resolve(e));
      return new Response("never");
    },
  });
  await using client = await within(HttpClient.connect(server.addr.port));
  await client.send(
    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
  );
  assert.ok(await within(failed.promise) instanceof Error);
  await within(client.readToEnd());
});

// -- req.signal --

Deno.test("req.signal aborts when the client goes away mid-request", async () => {
  const aborted = Promise.withResolvers<void>();
  const entered = Promise.withResolvers<void>();
  await using server = serve(() => {}, {
    onRequest(req) {
      req.signal.addEventListener("abort", () => aborted.resolve());
      entered.resolve();
      return new Promise<Response>((resolve) =>
        req.signal.addEventListener(
          "abort",
          () => resolve(new Response("late")),
        )
      );
    },
  });
  const client = await within(HttpClient.connect(server.addr.port));
  await client.send(get("/wait"));
  await within(entered.promise);
  client.close();
  await within(aborted.promise);
});

Deno.test("req.signal aborts when a fetch is aborted while the response streams", async () => {
  const aborted = Promise.withResolvers<void>();
  await using server = serve(() => {}, {
    onRequest(req) {
      req.signal.addEventListener("abort", () => aborted.resolve());
      let timer: ReturnType<typeof setInterval>;
      return new Response(
        new ReadableStream({
          start(controller) {
            timer = setInterval(
              () => controller.enqueue(encoder.encode("tick\n")),
              10,
            );
          },
          cancel() {
            clearInterval(timer);
          },
        }),
      );
    },
  });
  const controller = new AbortController();
  const response = await within(
    fetch(`http://127.0.0.1:${server.addr.port}/ticks`, {
      signal: controller.signal,
    }),
  );
  const reader = response.body!.getReader();
  await within(reader.read());
  controller.abort();
  await reader.closed.catch(() => {});
  await within(aborted.promise);
});

// -- Upgrade after plain requests --

Deno.test("an upgrade request after plain requests on the same connection becomes a WebSocket", async () => {
  await using server = pathServer();
  const port = server.addr.port;
  await using client = await within(HttpClient.connect(port));
  await client.send(get("/page") + get("/api"));
  assert.equal((await within(client.readResponse())).body, "path /page");
  assert.equal((await within(client.readResponse())).body, "path /api");
  await client.send(
    `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  const head = await within(client.readHead());
  assert.equal(head.statusLine, "HTTP/1.1 101 Switching Protocols");
  assert.equal(server.connections, 1);
  await client.send(clientFrame(0x1, "after http"));
  const frame = await within(client.readBytes(12));
  assert.deepEqual([frame[0], frame[1]], [0x81, 10]);
  assert.equal(new TextDecoder().decode(frame.subarray(2)), "after http");
});

Deno.test("the WebSocket client and fetch share one port with a kept-alive server", async () => {
  await using server = serve(echo, {
    onRequest: () => new Response("page"),
    keepAliveTimeout: 100,
  });
  const base = `127.0.0.1:${server.addr.port}`;
  assert.equal(await (await within(fetch(`http://${base}/`))).text(), "page");
  const sock = await within(connect(`ws://${base}/`));
  await sock.write("hi", "text");
  assert.deepEqual(await within(sock.read()), { type: "text", data: "hi" });
  await within(sock.close());
});

// -- Request targets --

Deno.test("req.url: an origin-form target is a path on the Host, even one that starts with //", async () => {
  const urls: string[] = [];
  await using server = serve(() => {}, {
    onRequest(req) {
      urls.push(req.url);
      return new Response("ok");
    },
  });
  await using client = await within(HttpClient.connect(server.addr.port));
  await client.send(
    "GET //evil.example/x HTTP/1.1\r\nHost: app.example:8080\r\n\r\n" +
      "GET /a/../b?q=1 HTTP/1.1\r\nHost: APP.example:80\r\n\r\n" +
      "GET http://other.example/abs HTTP/1.1\r\nHost: app.example\r\n\r\n",
  );
  for (let i = 0; i < 3; i++) await within(client.readResponse());
  assert.deepEqual(urls, [
    "http://app.example:8080//evil.example/x",
    "http://app.example/b?q=1",
    "http://other.example/abs",
  ]);
});

Deno.test("CONNECT and TRACE get 405, a Host that cannot be a URL's gets 400", async () => {
  await using server = pathServer();
  const cases: [string, number][] = [
    ["CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405],
    ["TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", 405],
    ["GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n", 400],
  ];
  for (const [request, status] of cases) {
    await using client = await within(HttpClient.connect(server.addr.port));
    await client.send(request);
    const response = await within(client.readResponse());
    assert.equal(response.status, status, request);
    assert.equal(response.headers.get("connection"), "close");
  }
});

Deno.test("response header values go out as the bytes they stand for (ISO-8859-1), not UTF-8", async () => {
  await using server = serve(() => {}, {
    onRequest: () => new Response("ok", { headers: { "x-name": "caf\u00e9" } }),
  });
  await using client = await within(HttpClient.connect(server.addr.port));
  await client.send(get("/", "Connection: close\r\n"));
  const bytes = await within(client.readToEnd());
  const text = Array.from(bytes, (b) => String.fromCharCode(b)).join("");
  assert.ok(text.includes("x-name: caf\xe9\r\n"), JSON.stringify(text));
});
