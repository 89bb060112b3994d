/**
 * permessage-deflate interoperability over real loopback sockets, with
 * compression on at both ends: npm `ws` (perMessageDeflate), Python
 * `websockets` (Debian's python3-websockets, run with /usr/bin/python3) and
 * headless Chromium, each as client of our server and (ws, Python) as
 * server of our client.
 *
 * Every peer is an echo: our side sends each case and checks what comes
 * back, so both directions compress and inflate. A counting TCP proxy sits
 * between the two ends and shows that the bytes on the wire really are
 * compressed. A text message `fragment:<text>` asks the peer to echo
 * `<text>` in three compressed frames with a ping between the first two.
 *
 * The Python and Chromium tests skip themselves when their program is
 * missing (`.ci/run` installs both).
 */

import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import { WebSocket as WsClient, WebSocketServer } from "ws";
import {
  connect,
  type ConnectOptions,
  type ListenOptions,
  type Message,
  type Server,
  type Socket,
} from "../mod.ts";
import { jsonText, noise, serve, stopChild, within } from "./_helpers.ts";
import { CHROMIUM, Chromium, HAS_CHROMIUM } from "./_chromium.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const PYTHON = "/usr/bin/python3";
const HAS_PYTHON_WEBSOCKETS = (() => {
  try {
    return new Deno.Command(PYTHON, {
      args: ["-c", "import websockets"],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false;
  }
})();

/** Our fragment size in these tests: big messages go out in many compressed frames. */
const FRAGMENT_SIZE = 8 * 1024;
/** Our close timeout: a close that hangs ends well inside the test's deadlines. */
const CLOSE_TIMEOUT = 2000;

function noop(): void {}

// -- Data --

// -- A counting TCP proxy --

/** Forwards connections to `127.0.0.1:target`, counting the bytes each way. */
class CountingProxy implements AsyncDisposable {
  readonly listener: Deno.TcpListener;
  /** Bytes from the client to the server. */
  up = 0;
  /** Bytes from the server to the client. */
  down = 0;
  #conns = new Set<Deno.Conn>();
  #tasks = new Set<Promise<void>>();
  #accepting: Promise<void>;

  constructor(target: number) {
    this.listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#accepting = this.#accept(target);
  }

  get port(): number {
    return this.listener.addr.port;
  }

  async #accept(target: number): Promise<void> {
    for (;;) {
      let inbound: Deno.Conn;
      try {
        inbound = await this.listener.accept();
      } catch {
        return;
      }
      this.#conns.add(inbound);
      const task = (async () => {
        let outbound: Deno.Conn;
        try {
          outbound = await Deno.connect({
            hostname: "127.0.0.1",
            port: target,
          });
        } catch {
          close(inbound);
          return;
        }
        this.#conns.add(outbound);
        await Promise.all([
          this.#pipe(inbound, outbound, "up"),
          this.#pipe(outbound, inbound, "down"),
        ]);
        close(inbound);
        close(outbound);
      })();
      this.#tasks.add(task);
      task.finally(() => this.#tasks.delete(task));
    }
  }

  async #pipe(
    from: Deno.Conn,
    to: Deno.Conn,
    direction: "up" | "down",
  ): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await from.read(buffer);
        if (n === null) break;
        this[direction] += n;
        for (let offset = 0; offset < n;) {
          offset += await to.write(buffer.subarray(offset, n));
        }
      }
      await to.closeWrite();
    } catch {
      // Reset, or closed by dispose: the other pipe ends too.
      close(from);
      close(to);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    close(this.listener);
    await this.#accepting;
    for (const conn of this.#conns) close(conn);
    await within(Promise.all(this.#tasks), "the proxy to stop");
  }
}

function close(closer: { close(): void }): void {
  try {
    closer.close();
  } catch {
    // Already closed.
  }
}

// -- The cases, run by our side against an echo peer --

/** Writes `data` and expects the same message back. */
async function roundTrip(
  sock: Socket,
  data: string | Uint8Array,
  what: string,
): Promise<void> {
  const type = typeof data === "string" ? "text" : "binary";
  await within(sock.write(data, type), `our write of ${what}`);
  assertEcho(await read(sock, what), data, what);
}

function read(sock: Socket, what: string): Promise<Message | null> {
  return within(sock.read(), `the echo of ${what}`);
}

function assertEcho(
  msg: Message | null,
  data: string | Uint8Array,
  what: string,
): void {
  const type = typeof data === "string" ? "text" : "binary";
  assert.equal(
    msg?.type,
    type,
    `${what}: ${JSON.stringify(msg)?.slice(0, 200)}`,
  );
  const got = (msg as { data: string | Uint8Array }).data;
  if (typeof data === "string") {
    assert.ok(got === data, `${what}: the text differs`);
  } else {
    assert.ok(got instanceof Uint8Array, what);
    assert.equal(got.length, data.length, `${what}: length`);
    assert.ok(
      got.every((byte, i) => byte === data[i]),
      `${what}: the bytes differ`,
    );
  }
}

/**
 * Runs every case against an echo peer through `proxy`. `interleave`: the
 * peer answers `fragment:` messages (Chromium cannot).
 */
async function exercise(
  sock: Socket,
  proxy: CountingProxy,
  interleave: boolean,
): Promise<void> {
  // Compressible text: both directions carry a fraction of its size.
  const text = jsonText(1500, 1);
  const [up, down] = [proxy.up, proxy.down];
  await roundTrip(sock, text, "JSON text");
  const size = encoder.encode(text).length;
  assert.ok(
    proxy.up - up < size / 4 && proxy.down - down < size / 4,
    `not compressed: ${size} bytes of text took ${proxy.up - up} bytes up, ${
      proxy.down - down
    } down`,
  );
  // The same again: with context takeover it refers to the first.
  await roundTrip(sock, text, "the same JSON text again");
  await roundTrip(sock, encoder.encode(jsonText(500, 2)), "JSON bytes");
  await roundTrip(sock, "hi", "a short text");
  await roundTrip(sock, "", "an empty text");
  await roundTrip(sock, new Uint8Array(0), "an empty binary");
  await roundTrip(sock, noise(100_000, 3), "100 KB that does not compress");
  await roundTrip(sock, "ab世界🦕".repeat(5000), "60 KB of multi-byte text");
  await roundTrip(
    sock,
    encoder.encode(jsonText(15_000, 4)),
    "1 MB of JSON bytes",
  );
  // Back to back, without waiting: compressed in order, inflated in order.
  const burst = Array.from(
    { length: 30 },
    (_, i) => i % 2 ? jsonText(20 + i, i) : encoder.encode(jsonText(i, i)),
  );
  await within(
    Promise.all(
      burst.map((data) =>
        sock.write(data, typeof data === "string" ? "text" : "binary")
      ),
    ),
    "our burst of writes",
  );
  for (const [i, data] of burst.entries()) {
    assertEcho(await read(sock, `burst message ${i}`), data, `burst ${i}`);
  }
  if (interleave) {
    const body = jsonText(300, 5);
    await within(sock.write(`fragment:${body}`, "text"), "our write");
    const ping = await read(sock, "a fragmented message");
    assert.equal(ping?.type, "ping", JSON.stringify(ping)?.slice(0, 200));
    assert.equal(
      decoder.decode((ping as { data: Uint8Array }).data),
      "between",
    );
    assertEcho(
      await read(sock, "a fragmented message"),
      body,
      "the fragmented echo",
    );
  }
}

// -- Our server, through the proxy --

/** Our `listen` server with `compression`; runs `exercise` on each socket and records its outcome. */
function ourServer(
  compression: ListenOptions["compression"],
  onSocket: (sock: Socket) => Promise<void>,
  options: Partial<ListenOptions> = {},
): Server & AsyncDisposable {
  return serve(onSocket, {
    compression,
    fragmentSize: FRAGMENT_SIZE,
    closeTimeout: CLOSE_TIMEOUT,
    ...options,
  });
}

/** Resolves with the first socket the server hands over, and the test's outcome of it. */
function firstSocket() {
  const sock = Promise.withResolvers<Socket>();
  const done = Promise.withResolvers<void>();
  done.promise.catch(noop);
  let taken = false;
  return {
    sock: sock.promise,
    done: done.promise,
    handler(run: (sock: Socket) => Promise<void>) {
      return async (s: Socket) => {
        if (taken) return;
        taken = true;
        sock.resolve(s);
        try {
          await run(s);
          done.resolve();
        } catch (error) {
          done.reject(error);
        }
      };
    },
  };
}

// -- npm ws --

/** Echoes every message; `fragment:` as described at the top. */
function wsEcho(ws: WsClient): void {
  ws.on("error", noop);
  ws.on("message", (data: Uint8Array, isBinary: boolean) => {
    if (!isBinary) {
      const text = decoder.decode(data);
      if (text.startsWith("fragment:")) {
        const body = text.slice("fragment:".length);
        const third = Math.ceil(body.length / 3);
        ws.send(body.slice(0, third), { fin: false });
        ws.ping("between");
        ws.send(body.slice(third, 2 * third), { fin: false });
        ws.send(body.slice(2 * third), { fin: true });
        return;
      }
      ws.send(text);
      return;
    }
    ws.send(data, { binary: true });
  });
}

/** Waits for a ws client or server socket to close, terminating it if needed. */
async function wsClosed(ws: WsClient): Promise<void> {
  if (ws.readyState === WsClient.CLOSED) return;
  const closed = new Promise<void>((resolve) => ws.once("close", resolve));
  if (ws.readyState !== WsClient.CLOSING) ws.terminate();
  await within(closed, "the ws socket to close");
}

const WS_VARIANTS: [string, Record<string, unknown>][] = [
  ["defaults", { threshold: 0 }],
  ["no context takeover, limited windows", {
    threshold: 0,
    serverNoContextTakeover: true,
    clientNoContextTakeover: true,
    serverMaxWindowBits: 10,
    clientMaxWindowBits: 9,
  }],
];

for (const [name, perMessageDeflate] of WS_VARIANTS) {
  Deno.test(`permessage-deflate: ws client → our server, ${name}`, async () => {
    const first = firstSocket();
    await using server = ourServer(
      true,
      first.handler(async (sock) => {
        await exercise(sock, proxy, true);
        await within(sock.close(), "our socket to close");
      }),
    );
    await using proxy = new CountingProxy(server.addr.port);
    const ws = new WsClient(`ws://127.0.0.1:${proxy.port}/`, {
      perMessageDeflate,
    });
    wsEcho(ws);
    try {
      const sock = await within(first.sock, "our server to accept");
      assert.match(sock.extensions, /^permessage-deflate\b/);
      await within(first.done, "the cases");
      assert.match(ws.extensions, /^permessage-deflate\b/);
    } finally {
      await wsClosed(ws);
    }
  });

  Deno.test(`permessage-deflate: our client → ws server, ${name}`, async () => {
    const wss = new WebSocketServer({
      host: "127.0.0.1",
      port: 0,
      perMessageDeflate,
    });
    const sockets: WsClient[] = [];
    wss.on("connection", (ws: WsClient) => {
      sockets.push(ws);
      wsEcho(ws);
    });
    try {
      await within(
        new Promise((resolve, reject) => {
          wss.once("listening", resolve);
          wss.once("error", reject);
        }),
        "the ws server to listen",
      );
      await using proxy = new CountingProxy(
        (wss.address() as AddressInfo).port,
      );
      const sock = await within(
        connect(`ws://127.0.0.1:${proxy.port}/`, {
          compression: true,
          fragmentSize: FRAGMENT_SIZE,
          closeTimeout: CLOSE_TIMEOUT,
        }),
        "our client to connect",
      );
      try {
        assert.match(sock.extensions, /^permessage-deflate\b/);
        await exercise(sock, proxy, true);
      } finally {
        await within(sock.close(), "our client to close");
      }
    } finally {
      await Promise.all(sockets.map(wsClosed));
      await within(
        new Promise<void>((resolve, reject) =>
          wss.close((error?: Error) => error ? reject(error) : resolve())
        ),
        "the ws server to close",
      );
    }
  });
}

Deno.test("permessage-deflate: our client asking for no context takeover and windows → ws server", async () => {
  const wss = new WebSocketServer({
    host: "127.0.0.1",
    port: 0,
    perMessageDeflate: { threshold: 0 },
  });
  const sockets: WsClient[] = [];
  wss.on("connection", (ws: WsClient) => {
    sockets.push(ws);
    wsEcho(ws);
  });
  try {
    await within(
      new Promise((resolve) => wss.once("listening", resolve)),
      "the ws server to listen",
    );
    await using proxy = new CountingProxy((wss.address() as AddressInfo).port);
    const compression: ConnectOptions["compression"] = {
      threshold: 0,
      serverNoContextTakeover: true,
      clientNoContextTakeover: true,
      serverMaxWindowBits: 11,
      clientMaxWindowBits: 12,
    };
    const sock = await within(
      connect(`ws://127.0.0.1:${proxy.port}/`, {
        compression,
        fragmentSize: FRAGMENT_SIZE,
        closeTimeout: CLOSE_TIMEOUT,
      }),
      "our client to connect",
    );
    try {
      assert.equal(
        sock.extensions,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=11; client_max_window_bits=12",
      );
      await exercise(sock, proxy, true);
    } finally {
      await within(sock.close(), "our client to close");
    }
  } finally {
    await Promise.all(sockets.map(wsClosed));
    await within(
      new Promise<void>((resolve) => wss.close(() => resolve())),
      "the ws server to close",
    );
  }
});

// -- Python websockets --

/**
 * An echo peer in Python `websockets` (legacy asyncio API, 10.x), as a
 * server (`server <params>`: prints {"port"}) or a client (`client <url>
 * <params>`). `<params>` is JSON: `null` for websockets' default
 * compression, else the permessage-deflate factory's arguments. It prints
 * {"extensions": [...]} once connected and ends when stdin closes (server)
 * or the connection does (client).
 */
const PYTHON_ECHO = `
import asyncio, json, sys
import websockets
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory, ServerPerMessageDeflateFactory)

def say(obj):
    print(json.dumps(obj), flush=True)

async def echo(ws, path=None):
    say({"extensions": [repr(e) for e in ws.extensions]})
    try:
        async for msg in ws:
            if isinstance(msg, str) and msg.startswith("fragment:"):
                body = msg[len("fragment:"):]
                third = -(-len(body) // 3)
                async def parts():
                    yield body[:third]
                    await ws.ping(b"between")
                    yield body[third:2 * third]
                    yield body[2 * third:]
                await ws.send(parts())
            else:
                await ws.send(msg)
    except websockets.ConnectionClosed:
        pass

def options(params, factory):
    common = {"max_size": 1 << 25, "ping_interval": None}
    if params is None:
        return {"compression": "deflate", **common}
    return {"compression": None, "extensions": [factory(**params)], **common}

async def main():
    mode = sys.argv[1]
    if mode == "server":
        params = json.loads(sys.argv[2])
        async with websockets.serve(echo, "127.0.0.1", 0,
                                    **options(params, ServerPerMessageDeflateFactory)) as server:
            say({"port": server.sockets[0].getsockname()[1]})
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    else:
        url, params = sys.argv[2], json.loads(sys.argv[3])
        async with websockets.connect(url, **options(params, ClientPerMessageDeflateFactory)) as ws:
            await echo(ws)
        say({"closed": ws.close_code})

asyncio.run(main())
`;

/** The Python echo peer's process; its JSON lines arrive in order. */
class PythonPeer implements AsyncDisposable {
  readonly #child: Deno.ChildProcess;
  readonly #lines: string[] = [];
  readonly #waiters: (() => void)[] = [];
  readonly #reading: Promise<void>;
  #ended = false;
  #stderr = "";

  constructor(args: string[]) {
    this.#child = new Deno.Command(PYTHON, {
      args: ["-c", PYTHON_ECHO, ...args],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const collect = async (
      stream: ReadableStream<Uint8Array>,
      onText: (text: string) => void,
    ) => {
      const textDecoder = new TextDecoder();
      for await (const chunk of stream) {
        onText(textDecoder.decode(chunk, { stream: true }));
      }
    };
    let pending = "";
    this.#reading = Promise.all([
      collect(this.#child.stdout, (text) => {
        pending += text;
        const lines = pending.split("\n");
        pending = lines.pop()!;
        this.#lines.push(...lines.filter((line) => line !== ""));
        for (const wake of this.#waiters.splice(0)) wake();
      }),
      collect(this.#child.stderr, (text) => {
        this.#stderr = (this.#stderr + text).slice(-4000);
      }),
    ]).then(() => {
      this.#ended = true;
      for (const wake of this.#waiters.splice(0)) wake();
    });
  }

  /** The next JSON line the peer printed. */
  async next(what: string): Promise<Record<string, unknown>> {
    while (this.#lines.length === 0) {
      if (this.#ended) {
        throw new Error(`Python ended before ${what}: ${this.#stderr}`);
      }
      const woken = new Promise<void>((resolve) => this.#waiters.push(resolve));
      await within(woken, `${what} from Python (stderr: ${this.#stderr})`);
    }
    return JSON.parse(this.#lines.shift()!);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    // Closing its stdin ends the peer; killed if it has not within 3 s.
    await this.#child.stdin.close().catch(noop);
    await stopChild(this.#child, 3000, null);
    await this.#reading;
  }
}

const PYTHON_VARIANTS: [string, Record<string, unknown> | null][] = [
  ["defaults", null],
  ["no context takeover, limited windows", {
    server_no_context_takeover: true,
    client_no_context_takeover: true,
    server_max_window_bits: 10,
    client_max_window_bits: 9,
  }],
];

for (const [name, params] of PYTHON_VARIANTS) {
  Deno.test({
    name: HAS_PYTHON_WEBSOCKETS
      ? `permessage-deflate: Python websockets client → our server, ${name}`
      : `permessage-deflate: Python websockets client → our server, ${name} (skipped: no websockets for ${PYTHON}; .ci/run installs python3-websockets)`,
    ignore: !HAS_PYTHON_WEBSOCKETS,
    async fn() {
      const first = firstSocket();
      await using server = ourServer(
        { threshold: 0 },
        first.handler(async (sock) => {
          await exercise(sock, proxy, true);
          await within(sock.close(), "our socket to close");
        }),
      );
      await using proxy = new CountingProxy(server.addr.port);
      await using python = new PythonPeer([
        "client",
        `ws://127.0.0.1:${proxy.port}/`,
        JSON.stringify(params),
      ]);
      const sock = await within(first.sock, "our server to accept");
      const { extensions } = await python.next("the handshake");
      assert.match(String(extensions), /PerMessageDeflate/);
      assert.match(sock.extensions, /^permessage-deflate\b/);
      await within(first.done, "the cases");
      assert.deepEqual(await python.next("the close"), { closed: 1000 });
    },
  });

  Deno.test({
    name: HAS_PYTHON_WEBSOCKETS
      ? `permessage-deflate: our client → Python websockets server, ${name}`
      : `permessage-deflate: our client → Python websockets server, ${name} (skipped)`,
    ignore: !HAS_PYTHON_WEBSOCKETS,
    async fn() {
      await using python = new PythonPeer(["server", JSON.stringify(params)]);
      const { port } = await python.next("the port");
      await using proxy = new CountingProxy(port as number);
      const sock = await within(
        connect(`ws://127.0.0.1:${proxy.port}/`, {
          compression: { threshold: 0 },
          fragmentSize: FRAGMENT_SIZE,
          closeTimeout: CLOSE_TIMEOUT,
        }),
        "our client to connect",
      );
      try {
        // websockets' defaults announce a 12-bit window for both sides.
        assert.equal(
          sock.extensions,
          params === null
            ? "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
            : "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9",
        );
        const { extensions } = await python.next("the handshake");
        assert.match(String(extensions), /PerMessageDeflate/);
        await exercise(sock, proxy, true);
      } finally {
        await within(sock.close(), "our client to close");
      }
    },
  });
}

// -- Headless Chromium --

/**
 * The page: connects to every `ws` URL of its query and echoes what it
 * gets; `extensions?` is answered with `extensions:` and what the browser
 * negotiated.
 */
const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>permessage-deflate</title>
<script>
for (const url of new URLSearchParams(location.search).getAll("ws")) {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ws.onmessage = (event) => {
    if (event.data === "extensions?") ws.send("extensions:" + ws.extensions);
    else ws.send(event.data);
  };
}
</script>
`;

Deno.test({
  name: HAS_CHROMIUM
    ? "permessage-deflate: headless Chromium → our server, with and without context takeover"
    : `permessage-deflate: headless Chromium → our server (skipped: ${CHROMIUM} not found; .ci/run installs it)`,
  ignore: !HAS_CHROMIUM,
  async fn() {
    // Two servers: Chromium's default offer, and a server that turns
    // context takeover off both ways and limits both windows.
    const configs: ListenOptions["compression"][] = [
      true,
      {
        serverNoContextTakeover: true,
        clientNoContextTakeover: true,
        serverMaxWindowBits: 10,
        clientMaxWindowBits: 9,
        threshold: 0,
      },
    ];
    const expected = [
      "permessage-deflate",
      "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=9",
    ];
    const runs = configs.map(() => firstSocket());
    await using stack = new AsyncDisposableStack();
    const proxies: CountingProxy[] = [];
    const servers = configs.map((compression, i) =>
      stack.use(ourServer(
        compression,
        runs[i].handler(async (sock) => {
          assert.equal(sock.extensions, expected[i]);
          await within(sock.write("extensions?", "text"), "our write");
          const reply = await read(sock, "the page's extensions");
          assert.deepEqual(reply, {
            type: "text",
            data: `extensions:${expected[i]}`,
          });
          await exercise(sock, proxies[i], false);
          await within(sock.close(), "our socket to close");
        }),
        i === 0 ? { onRequest: () => pageResponse() } : {},
      ))
    );
    for (const server of servers) {
      proxies.push(stack.use(new CountingProxy(server.addr.port)));
    }
    const query = proxies.map((proxy) =>
      `ws=${encodeURIComponent(`ws://127.0.0.1:${proxy.port}/`)}`
    ).join("&");
    const browser = stack.use(
      await Chromium.launch({
        url: `http://127.0.0.1:${servers[0].addr.port}/?${query}`,
        profilePrefix: "deflate_chromium_",
      }),
    );
    try {
      // Starting the browser takes longer than any other wait here.
      await within(
        Promise.all(runs.map((run) => run.sock)),
        "Chromium to connect",
        15_000,
      );
      await within(Promise.all(runs.map((run) => run.done)), "the cases");
    } catch (error) {
      throw new Error(`${error}\nChromium log: ${browser.log}`);
    }
  },
});

function pageResponse(): Response {
  return new Response(PAGE, {
    headers: { "content-type": "text/html; charset=utf-8" },
  });
}
