/**
 * `connect` over real loopback connections: what it sends, and how it
 * fails.
 */

import assert from "node:assert/strict";
import { connect, listen, WebSocketError } from "../mod.ts";
import { CERT, echo, KEY, readAll, serve, urlOf, within } from "./_helpers.ts";

function isError(code: string): (error: unknown) => boolean {
  return (error) => error instanceof WebSocketError && error.code === code;
}

// -- Request --

Deno.test("the headers option is sent with the upgrade request", async () => {
  const headers = Promise.withResolvers<Headers>();
  await using server = serve((sock) => headers.resolve(sock.request.headers));
  const sock = await within(connect(urlOf(server), {
    headers: {
      "Authorization": "Bearer token",
      "X-Custom": "one",
      "User-Agent": "socket-test",
    },
  }));
  const seen = await within(headers.promise);
  assert.equal(seen.get("authorization"), "Bearer token");
  assert.equal(seen.get("x-custom"), "one");
  assert.equal(seen.get("user-agent"), "socket-test");
  await within(readAll(sock));
  await sock.close();
});

Deno.test("the headers option accepts a Headers object and an array of pairs", async () => {
  const seen: Headers[] = [];
  await using server = serve((sock) => {
    seen.push(sock.request.headers);
  });
  for (
    const headers of [
      new Headers({ "X-From": "headers" }),
      [["X-From", "pairs"]] as [string, string][],
    ]
  ) {
    const sock = await within(connect(urlOf(server), { headers }));
    await within(readAll(sock));
    await sock.close();
  }
  assert.deepEqual(seen.map((h) => h.get("x-from")), ["headers", "pairs"]);
});

Deno.test("headers cannot override the ones the handshake depends on", async () => {
  const headers = Promise.withResolvers<Headers>();
  await using server = serve((sock) => headers.resolve(sock.request.headers));
  const sock = await within(connect(urlOf(server), {
    headers: {
      "Upgrade": "h2c",
      "Sec-WebSocket-Version": "8",
      "Sec-WebSocket-Key": "bad",
    },
  }));
  const seen = await within(headers.promise);
  assert.equal(seen.get("upgrade"), "websocket");
  assert.equal(seen.get("sec-websocket-version"), "13");
  assert.notEqual(seen.get("sec-websocket-key"), "bad");
  await within(readAll(sock));
  await sock.close();
});

Deno.test("the URL path and query reach sock.request.url", async () => {
  const url = Promise.withResolvers<string>();
  await using server = serve((sock) => url.resolve(sock.request.url));
  const target = urlOf(server, "/chat/room%201?user=ann&tags=a,b");
  const sock = await within(connect(target));
  assert.equal(await within(url.promise), target);
  assert.equal(sock.request.url, target);
  assert.equal(sock.request.method, "GET");
  await within(readAll(sock));
  await sock.close();
});

Deno.test("connect() accepts a URL object", async () => {
  await using server = serve(echo);
  const sock = await within(connect(new URL(urlOf(server, "/object"))));
  await sock.write("hi", "text");
  assert.deepEqual(await within(sock.read()), { type: "text", data: "hi" });
  await within(sock.close());
});

// -- Response --

Deno.test("sock.response holds the 101 status and headers", async () => {
  await using server = serve(echo);
  const sock = await within(connect(urlOf(server)));
  assert.equal(sock.response?.status, 101);
  assert.equal(
    sock.response?.headers.get("upgrade")?.toLowerCase(),
    "websocket",
  );
  assert.match(
    sock.response?.headers.get("sec-websocket-accept") ?? "",
    /^[A-Za-z0-9+/]{27}=$/,
  );
  assert.equal(sock.protocol, "");
  assert.equal(sock.extensions, "");
  await within(sock.close());
});

// -- wss:// --

Deno.test("wss:// connects when caCerts trusts the server's certificate", async () => {
  const secure = Promise.withResolvers<boolean>();
  await using server = serve(async (sock) => {
    secure.resolve(sock.request.url.startsWith("wss:"));
    await echo(sock);
  }, { tls: true, certs: [{ cert: CERT, key: KEY }] });
  const sock = await within(
    connect(urlOf(server, "/", true), { caCerts: [CERT] }),
  );
  assert.equal(await within(secure.promise), true);
  const big = new Uint8Array(300_000).map((_, i) => i % 251);
  await sock.write(big);
  assert.deepEqual(await within(sock.read()), { type: "binary", data: big });
  await within(sock.close());
  assert.deepEqual(await sock.closed, {
    code: 1000,
    reason: "",
    wasClean: true,
  });
});

Deno.test("wss:// also verifies the certificate for 127.0.0.1", async () => {
  await using server = serve(echo, {
    tls: true,
    certs: [{ cert: CERT, key: KEY }],
  });
  const sock = await within(
    connect(`wss://127.0.0.1:${server.addr.port}/`, { caCerts: [CERT] }),
  );
  await sock.write("over tls", "text");
  assert.deepEqual(await within(sock.read()), {
    type: "text",
    data: "over tls",
  });
  await within(sock.close());
});

Deno.test("wss:// rejects with TLS_FAILED when the self-signed certificate is not trusted", async () => {
  const errors: unknown[] = [];
  let handled = 0;
  await using server = serve(() => {
    handled++;
  }, {
    tls: true,
    certs: [{ cert: CERT, key: KEY }],
    onError: (e) => errors.push(e),
  });
  await assert.rejects(
    within(connect(urlOf(server, "/", true))),
    isError("TLS_FAILED"),
  );
  // The server is unharmed and still serves a trusting client.
  const sock = await within(
    connect(urlOf(server, "/", true), { caCerts: [CERT] }),
  );
  await within(readAll(sock));
  await sock.close();
  assert.equal(handled, 1);
  assert.deepEqual(errors, []);
});

Deno.test("ws:// to a tls server fails the handshake and the server keeps serving", async () => {
  await using server = serve(echo, {
    tls: true,
    certs: [{ cert: CERT, key: KEY }],
  });
  await assert.rejects(
    within(
      connect(`ws://127.0.0.1:${server.addr.port}/`, {
        handshakeTimeout: 1000,
      }),
    ),
    (e) =>
      e instanceof WebSocketError &&
      ["BAD_HANDSHAKE", "HANDSHAKE_TIMEOUT"].includes(e.code),
  );
  const sock = await within(
    connect(urlOf(server, "/", true), { caCerts: [CERT] }),
  );
  await within(sock.close());
});

// -- Connection failures --

Deno.test("connect() rejects with CONNECTION_FAILED when nothing listens", async () => {
  const listener = listen({ addr: "127.0.0.1:0", handler() {} });
  const port = listener.addr.port;
  await listener.close();
  await assert.rejects(
    within(connect(`ws://127.0.0.1:${port}/`)),
    isError("CONNECTION_FAILED"),
  );
});

Deno.test("connect() rejects an invalid protocols option with a TypeError", async () => {
  await using server = serve(echo);
  for (const protocols of [["has space"], ["a", "a"], [""]]) {
    await assert.rejects(
      connect(urlOf(server), { protocols }),
      TypeError,
      JSON.stringify(protocols),
    );
  }
});

Deno.test("connect() rejects an invalid limit option with a TypeError naming it", async () => {
  await using server = serve(echo);
  for (
    const [name, value] of [["maxMessageSize", 0], ["closeTimeout", -1], [
      "fragmentSize",
      NaN,
    ]] as const
  ) {
    await assert.rejects(
      connect(urlOf(server), { [name]: value }),
      (e) => e instanceof TypeError && e.message.includes(name),
    );
  }
});
