/**
 * End to end with a real Hono app (issue 14): `app.fetch` passed as
 * `onRequest`, and our WebSockets on the same port. Routes, middleware,
 * JSON, a server-sent events stream read as it comes, an 8 MiB streamed
 * download, a chunked upload, and a WebSocket route.
 */

import assert from "node:assert/strict";
import { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import { connect, WebSocketError } from "../mod.ts";
import { echo, serve, within } from "./_helpers.ts";
import { startServerExample } from "./_examples.ts";

const DOWNLOAD = 8 * 1024 * 1024;

/** Byte `i` of the download: a pattern that catches lost or moved bytes. */
function patternAt(i: number): number {
  return (i * 31 + (i >> 16)) & 0xff;
}

function downloadStream(): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream({
    pull(controller) {
      if (sent >= DOWNLOAD) return controller.close();
      const piece = new Uint8Array(Math.min(64 * 1024, DOWNLOAD - sent));
      for (let i = 0; i < piece.length; i++) piece[i] = patternAt(sent + i);
      sent += piece.length;
      controller.enqueue(piece);
    },
  });
}

function app(sse: { next: Promise<void> }) {
  const hono = new Hono();
  const seen: string[] = [];
  // Middleware: runs around every route.
  hono.use("*", async (c, next) => {
    seen.push(`${c.req.method} ${c.req.path}`);
    await next();
    c.header("x-served-by", "hono");
  });
  hono.get("/", (c) => c.html("<h1>Home</h1>"));
  hono.get(
    "/api/users/:id",
    (c) => c.json({ id: Number(c.req.param("id")), name: "Ann" }),
  );
  hono.post("/api/echo", async (c) => {
    const body = await c.req.json();
    return c.json({ received: body }, 201);
  });
  hono.get("/events", (c) =>
    streamSSE(c, async (stream) => {
      await stream.writeSSE({ event: "tick", data: "one", id: "1" });
      await sse.next;
      await stream.writeSSE({ event: "tick", data: "two", id: "2" });
    }));
  hono.get("/download", () =>
    new Response(downloadStream(), {
      headers: { "content-type": "application/octet-stream" },
    }));
  hono.post("/upload", async (c) => {
    let size = 0;
    let sum = 0;
    for await (const bytes of c.req.raw.body!) {
      size += bytes.length;
      for (const b of bytes) sum = (sum + b) % 65521;
    }
    return c.json({ size, sum });
  });
  return { hono, seen };
}

Deno.test("a Hono app and WebSockets share one port: routes, middleware, JSON, SSE, a download, an upload", async () => {
  const release = Promise.withResolvers<void>();
  const { hono, seen } = app({ next: release.promise });
  await using server = serve(echo, {
    maxRequestBodySize: 4 * 1024 * 1024,
    onRequest: hono.fetch,
    // Auth once, for the WebSocket route only.
    upgrade(req) {
      const url = new URL(req.url);
      if (url.pathname !== "/ws") {
        return new Response("Not found", { status: 404 });
      }
      if (url.searchParams.get("token") !== "t0k") {
        return new Response("Unauthorized", { status: 401 });
      }
    },
  });
  const base = `127.0.0.1:${server.addr.port}`;

  // -- Routes, middleware, JSON --
  const home = await within(fetch(`http://${base}/`));
  assert.equal(home.status, 200);
  assert.match(home.headers.get("content-type")!, /^text\/html/);
  assert.equal(home.headers.get("x-served-by"), "hono");
  assert.equal(await home.text(), "<h1>Home</h1>");

  const user = await within(fetch(`http://${base}/api/users/7`));
  // A body at hand at once goes out with its length, not chunked.
  assert.equal(user.headers.get("content-length"), "21");
  assert.deepEqual(await user.json(), { id: 7, name: "Ann" });

  const posted = await within(
    fetch(`http://${base}/api/echo`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ hello: ["world", 1] }),
    }),
  );
  assert.equal(posted.status, 201);
  assert.deepEqual(await posted.json(), { received: { hello: ["world", 1] } });

  const missing = await within(fetch(`http://${base}/nope`));
  assert.equal(missing.status, 404);
  await missing.body?.cancel();

  // -- Server-sent events, read as they come --
  const events = await within(fetch(`http://${base}/events`));
  assert.equal(events.headers.get("content-type"), "text/event-stream");
  const reader = events.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("id: 1\n\n")) {
    const { value, done } = await within(reader.read());
    assert.ok(!done, "the stream ended before its first event");
    text += value;
  }
  // The second event is not produced yet, and the first has arrived.
  assert.ok(!text.includes("two"));
  release.resolve();
  for (;;) {
    const { value, done } = await within(reader.read());
    if (done) break;
    text += value;
  }
  assert.equal(
    text,
    "event: tick\ndata: one\nid: 1\n\nevent: tick\ndata: two\nid: 2\n\n",
  );

  // -- An 8 MiB streamed download --
  const download = await within(fetch(`http://${base}/download`));
  assert.equal(download.headers.get("transfer-encoding"), "chunked");
  let received = 0;
  let wrong = -1;
  for await (const bytes of download.body!) {
    for (let i = 0; i < bytes.length && wrong === -1; i++) {
      if (bytes[i] !== patternAt(received + i)) wrong = received + i;
    }
    received += bytes.length;
  }
  assert.equal(received, DOWNLOAD);
  assert.equal(wrong, -1, `first wrong byte at ${wrong}`);

  // -- A chunked upload (fetch sends a stream chunked) --
  const pieces = 50;
  let expectedSum = 0;
  const upload = new ReadableStream<Uint8Array>({
    start(controller) {
      for (let p = 0; p < pieces; p++) {
        const piece = new Uint8Array(40_000).map((_, i) => (p + i) & 0xff);
        for (const b of piece) expectedSum = (expectedSum + b) % 65521;
        controller.enqueue(piece);
      }
      controller.close();
    },
  });
  const uploaded = await within(
    fetch(`http://${base}/upload`, { method: "POST", body: upload }),
  );
  assert.deepEqual(await uploaded.json(), {
    size: pieces * 40_000,
    sum: expectedSum,
  });

  // -- The WebSocket route, on the same port --
  const sock = await within(connect(`ws://${base}/ws?token=t0k`));
  await sock.write("over the same port", "text");
  assert.deepEqual(await within(sock.read()), {
    type: "text",
    data: "over the same port",
  });
  await within(sock.close());
  const refused = await within(
    connect(`ws://${base}/ws?token=bad`).catch((e) => e),
  );
  assert.ok(refused instanceof WebSocketError);
  assert.match(refused.message, /401/);

  assert.deepEqual(seen, [
    "GET /",
    "GET /api/users/7",
    "POST /api/echo",
    "GET /nope",
    "GET /events",
    "GET /download",
    "POST /upload",
  ]);
});

// -- examples/hono_app.ts --

Deno.test("examples/hono_app.ts serves its page, API and clock, and a chat for known tokens only", async () => {
  const { process, port } = await startServerExample("hono_app.ts");
  try {
    const base = `127.0.0.1:${port}`;
    const page = await within(fetch(`http://${base}/?token=ann-token`));
    assert.match(await page.text(), /new WebSocket/);
    assert.ok(page.headers.get("x-response-time")?.endsWith("ms"));
    const me = await within(fetch(`http://${base}/api/me?token=bob-token`));
    assert.deepEqual(await me.json(), { user: "bob" });
    const stranger = await within(fetch(`http://${base}/api/me?token=x`));
    assert.equal(stranger.status, 401);
    await stranger.body?.cancel();

    const clock = await within(fetch(`http://${base}/clock`));
    const reader = clock.body!.pipeThrough(new TextDecoderStream()).getReader();
    const { value } = await within(reader.read());
    assert.match(value!, /^data: \d{4}-\d\d-\d\dT/);
    await reader.cancel();

    const ann = await within(connect(`ws://${base}/ws?token=ann-token`));
    assert.deepEqual(await within(ann.read()), {
      type: "text",
      data: "ann joined",
    });
    await ann.write("hello", "text");
    assert.deepEqual(await within(ann.read()), {
      type: "text",
      data: "ann: hello",
    });
    await within(ann.close());
    const refused = await within(
      connect(`ws://${base}/ws?token=nope`).catch((e) => e),
    );
    assert.ok(refused instanceof WebSocketError);
    assert.match(refused.message, /401/);
    await process.waitFor("GET /api/me 401");
  } finally {
    const status = await process.stop();
    assert.equal(status.code, 0, process.stderr);
  }
});
