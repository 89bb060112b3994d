/**
 * `connect` behind HTTP proxies and through redirects: a real tinyproxy
 * (Debian's `tinyproxy`, which `.ci/run` installs) on a loopback port with
 * its own config, subprocesses with a clean environment for the proxy
 * variables, raw fake proxies for what tinyproxy never does, and servers of
 * the tests' own that redirect.
 */

import assert from "node:assert/strict";
import { connect, type Server, WebSocketError } from "../mod.ts";
import { noProxyMatches, parseProxy, proxyFor } from "../src/proxy.ts";
import { redirectTarget } from "../src/redirect.ts";
import type { ResponseHead } from "../src/http.ts";
import {
  answerClose,
  CERT,
  echo,
  freePort,
  KEY,
  RawServer,
  readAll,
  serve,
  stopChild,
  urlOf,
  waitFor,
  within,
} from "./_helpers.ts";
import { acceptKey } from "../src/handshake.ts";

function isError(code: string): (error: unknown) => boolean {
  return (error) => error instanceof WebSocketError && error.code === code;
}

const TLS = { tls: true, certs: [{ cert: CERT, key: KEY }] };

/** A port nothing listens on (bound, then released). */
const closedPort = freePort;

// -- A real proxy: tinyproxy --

interface Tinyproxy extends AsyncDisposable {
  port: number;
  /** `http://127.0.0.1:<port>`. */
  url: string;
  /** The log so far. */
  log(): string;
  /** Waits until the log shows a CONNECT to `port`, and returns the log. */
  sawConnect(port: number): Promise<string>;
}

const TINYPROXY = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"].find((path) => {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
});

/**
 * Starts tinyproxy in the foreground on a free loopback port, with its own
 * config and log in a temporary directory; `config` lines are added (for
 * example `BasicAuth`). Fails, never skips, when tinyproxy is missing.
 */
async function tinyproxy(config: string[] = []): Promise<Tinyproxy> {
  if (TINYPROXY === undefined) {
    throw new Error(
      "tinyproxy not found in /usr/bin or /usr/sbin: apt-get install tinyproxy (.ci/run does)",
    );
  }
  const dir = await Deno.makeTempDir({ prefix: "proxy_test_" });
  const logFile = `${dir}/tinyproxy.log`;
  for (let attempt = 0;; attempt++) {
    const port = closedPort();
    // No ConnectPort line: CONNECT may go to any port.
    await Deno.writeTextFile(
      `${dir}/tinyproxy.conf`,
      [
        `Port ${port}`,
        "Listen 127.0.0.1",
        "Timeout 30",
        `LogFile "${logFile}"`,
        "LogLevel Info",
        "MaxClients 50",
        "Allow 127.0.0.1",
        ...config,
      ].join("\n") + "\n",
    );
    const child = new Deno.Command(TINYPROXY, {
      args: ["-d", "-c", `${dir}/tinyproxy.conf`],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    let exited = false;
    child.status.then(() => exited = true);
    const up = await listening(port, () => exited);
    if (!up) {
      await stopChild(child, 1000);
      if (attempt < 3) continue;
      await Deno.remove(dir, { recursive: true });
      throw new Error(`tinyproxy did not start on port ${port}`);
    }
    const log = () => {
      try {
        return Deno.readTextFileSync(logFile);
      } catch {
        return "";
      }
    };
    return {
      port,
      url: `http://127.0.0.1:${port}`,
      log,
      async sawConnect(target: number) {
        const line = new RegExp(`CONNECT \\S+:${target} HTTP/1\\.1`);
        await waitFor(() => line.test(log()), `tinyproxy to log ${line}`)
          .catch((error) => {
            throw new Error(`${error.message}; the log:\n${log()}`);
          });
        return log();
      },
      async [Symbol.asyncDispose]() {
        await stopChild(child, 2000);
        await Deno.remove(dir, { recursive: true });
      },
    };
  }
}

/** Whether something accepts on `port` before `gone()` or 5 s. */
async function listening(port: number, gone: () => boolean): Promise<boolean> {
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && !gone()) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return true;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  return false;
}

/**
 * A TLS front for a plain proxy: accepts TLS on a loopback port with the
 * test certificate and relays the bytes to `port`, so the proxy is an
 * `https:` proxy.
 */
function tlsFront(port: number): { url: string } & AsyncDisposable {
  const listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: CERT,
    key: KEY,
  });
  const relays: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const front of listener) {
      relays.push((async () => {
        let back: Deno.Conn;
        try {
          back = await Deno.connect({ hostname: "127.0.0.1", port });
        } catch {
          front.close();
          return;
        }
        const closeBoth = () => {
          for (const conn of [front, back]) {
            try {
              conn.close();
            } catch { /* closed */ }
          }
        };
        const pumps = [pump(front, back), pump(back, front)];
        await Promise.race(pumps);
        closeBoth();
        await Promise.all(pumps);
      })());
    }
  })();
  return {
    url: `https://localhost:${listener.addr.port}`,
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting.catch(() => {});
      await Promise.all(relays);
    },
  };
}

async function pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(16 * 1024);
  try {
    for (;;) {
      const n = await from.read(buffer);
      if (n === null) return;
      for (let offset = 0; offset < n;) {
        offset += await to.write(buffer.subarray(offset, n));
      }
    }
  } catch {
    // Either side closed.
  }
}

/** Connects, echoes one message, closes; returns the server's port. */
async function echoThrough(
  server: Server,
  url: string,
  options: Parameters<typeof connect>[1],
): Promise<void> {
  const sock = await within(connect(url, options), "connect()");
  await sock.write("through the tunnel", "text");
  assert.deepEqual(await within(sock.read()), {
    type: "text",
    data: "through the tunnel",
  });
  await within(sock.close());
  assert.equal((await sock.closed).code, 1000);
  assert.ok(server.addr.port > 0);
}

// -- Through tinyproxy --

Deno.test("ws:// goes through an http: proxy's CONNECT tunnel", async () => {
  await using proxy = await tinyproxy();
  await using server = serve(echo);
  await echoThrough(server, urlOf(server), { proxy: proxy.url });
  const log = await proxy.sawConnect(server.addr.port);
  assert.match(log, /Established connection to host "127\.0\.0\.1"/);
});

Deno.test("wss:// runs TLS with the server inside the tunnel, its name checked", async () => {
  await using proxy = await tinyproxy();
  await using server = serve(echo, TLS);
  await echoThrough(server, urlOf(server, "/", true), {
    proxy: proxy.url,
    caCerts: [CERT],
  });
  await proxy.sawConnect(server.addr.port);
  // Without the server's CA the TLS inside the tunnel fails: it is the
  // server's certificate being checked, not the proxy's (which has none).
  await assert.rejects(
    connect(urlOf(server, "/", true), { proxy: proxy.url }),
    isError("TLS_FAILED"),
  );
});

Deno.test("a proxy with BasicAuth takes percent-encoded credentials from the URL", async () => {
  await using proxy = await tinyproxy(["BasicAuth ann s3cr.t-x"]);
  await using server = serve(echo);
  const authed = proxy.url.replace("//", "//ann:s3cr%2Et-x@");
  await echoThrough(server, urlOf(server), { proxy: authed });
  await proxy.sawConnect(server.addr.port);
});

Deno.test("a proxy that wants credentials rejects with PROXY_ERROR and its 407 status line", async () => {
  await using proxy = await tinyproxy(["BasicAuth ann s3cr.t-x"]);
  await using server = serve(echo);
  const missing: WebSocketError = await connect(urlOf(server), {
    proxy: proxy.url,
  }).catch((e) => e);
  assert.ok(isError("PROXY_ERROR")(missing));
  assert.match(missing.message, /407 Proxy Authentication Required/);
  assert.match(missing.message, /no credentials/);
  const wrong: WebSocketError = await connect(urlOf(server), {
    proxy: proxy.url.replace("//", "//ann:wrong@"),
  }).catch((e) => e);
  assert.ok(isError("PROXY_ERROR")(wrong));
  // tinyproxy answers wrong credentials with a 401.
  assert.match(wrong.message, /HTTP\/1\.[01] 40[17] /);
  assert.doesNotMatch(wrong.message, /wrong/, "no password in messages");
  assert.equal(server.connections, 0);
});

Deno.test("a proxy that refuses the port rejects with PROXY_ERROR and its 403", async () => {
  await using proxy = await tinyproxy(["ConnectPort 443"]);
  await using server = serve(echo);
  const error: WebSocketError = await connect(urlOf(server), {
    proxy: proxy.url,
  }).catch((e) => e);
  assert.ok(isError("PROXY_ERROR")(error));
  assert.match(error.message, /HTTP\/1\.[01] 403 /);
  assert.match(
    error.message,
    new RegExp(`CONNECT 127\\.0\\.0\\.1:${server.addr.port}`),
  );
});

Deno.test("a proxy that cannot reach the server rejects with PROXY_ERROR and its 5xx", async () => {
  await using proxy = await tinyproxy();
  const error: WebSocketError = await connect(
    `ws://127.0.0.1:${closedPort()}/`,
    { proxy: proxy.url },
  ).catch((e) => e);
  assert.ok(isError("PROXY_ERROR")(error));
  assert.match(error.message, /HTTP\/1\.[01] 5\d\d /);
});

Deno.test("a proxy that is down rejects with CONNECTION_FAILED naming the proxy", async () => {
  await using server = serve(echo);
  const port = closedPort();
  const error: WebSocketError = await connect(urlOf(server), {
    proxy: `http://127.0.0.1:${port}`,
  }).catch((e) => e);
  assert.ok(isError("CONNECTION_FAILED")(error));
  assert.match(error.message, new RegExp(`proxy.*127\\.0\\.0\\.1:${port}`));
  assert.equal(server.connections, 0);
});

Deno.test("ws:// goes through an https: proxy; wss:// through one is refused up front", async () => {
  await using proxy = await tinyproxy();
  await using front = tlsFront(proxy.port);
  await using server = serve(echo);
  await echoThrough(server, urlOf(server), {
    proxy: front.url,
    caCerts: [CERT],
  });
  await proxy.sawConnect(server.addr.port);
  // The proxy's certificate is checked too.
  await assert.rejects(
    connect(urlOf(server), { proxy: front.url }),
    isError("TLS_FAILED"),
  );
  const error: WebSocketError = await connect("wss://localhost:1/", {
    proxy: front.url,
    caCerts: [CERT],
  }).catch((e) => e);
  assert.ok(isError("PROXY_ERROR")(error));
  assert.match(error.message, /TLS inside TLS/);
});

Deno.test("redirects are followed through the proxy, each hop its own CONNECT", async () => {
  await using proxy = await tinyproxy();
  await using target = serve(echo);
  await using mover = serve(echo, {
    upgrade: () =>
      new Response(null, {
        status: 307,
        headers: { Location: `http://127.0.0.1:${target.addr.port}/moved` },
      }),
  });
  await echoThrough(target, urlOf(mover), {
    proxy: proxy.url,
    followRedirects: true,
  });
  await proxy.sawConnect(mover.addr.port);
  await proxy.sawConnect(target.addr.port);
});

// -- Fake proxies: what tinyproxy never does --

Deno.test("CONNECT names the host and port and sends Proxy-Authorization", async () => {
  await using fake = new RawServer();
  const accepted = fake.accept();
  const connecting = connect("wss://example.invalid:8443/chat", {
    proxy: `http://ann:p%40ss%20w%C3%B6rd@127.0.0.1:${fake.port}/ignored`,
  }).catch((e) => e);
  const peer = await within(accepted);
  const head = await within(peer.readHead());
  assert.equal(
    head,
    "CONNECT example.invalid:8443 HTTP/1.1\r\nHost: example.invalid:8443\r\n" +
      `Proxy-Authorization: Basic ${
        btoa(String.fromCharCode(...new TextEncoder().encode("ann:p@ss wörd")))
      }\r\n\r\n`,
  );
  await peer.send("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
  const error = await within(connecting);
  assert.ok(isError("PROXY_ERROR")(error));
  assert.match(error.message, /HTTP\/1\.1 502 Bad Gateway/);
});

Deno.test("bytes after the proxy's 200 are the start of the server's 101", async () => {
  await using fake = new RawServer();
  const accepted = fake.accept();
  const connecting = connect("ws://ws.example.invalid/", {
    proxy: `http://127.0.0.1:${fake.port}`,
  });
  const peer = await within(accepted);
  await within(peer.readHead());
  // One write: the tunnel's 200 and the first half of the server's answer.
  await peer.send(
    "HTTP/1.1 200 Connection established\r\n\r\n" +
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n",
  );
  const request = await within(peer.readHead());
  assert.match(request, /^GET \/ HTTP\/1\.1\r\nHost: ws\.example\.invalid\r\n/);
  const key = /^sec-websocket-key:\s*(\S+)/im.exec(request)![1];
  await peer.send(
    `Connection: Upgrade\r\nSec-WebSocket-Accept: ${acceptKey(key)}\r\n\r\n`,
  );
  const sock = await within(connecting);
  assert.equal(sock.readyState, "open");
  const closing = sock.close();
  await answerClose(peer);
  await within(closing);
});

Deno.test("bytes after the proxy's 200 before a TLS handshake are a PROXY_ERROR", async () => {
  await using fake = new RawServer();
  const accepted = fake.accept();
  const connecting = connect("wss://wss.example.invalid/", {
    proxy: `http://127.0.0.1:${fake.port}`,
  }).catch((e) => e);
  const peer = await within(accepted);
  await within(peer.readHead());
  await peer.send("HTTP/1.1 200 OK\r\n\r\nnot a TLS record");
  const error = await within(connecting);
  // The same read carries both on loopback; were they split, TLS fails.
  assert.ok(
    isError("PROXY_ERROR")(error) || isError("TLS_FAILED")(error),
    String(error),
  );
});

Deno.test("a proxy that never answers CONNECT runs into handshakeTimeout", async () => {
  await using fake = new RawServer();
  const accepted = fake.accept();
  const started = Date.now();
  const error: WebSocketError = await connect("ws://slow.example.invalid/", {
    proxy: `http://127.0.0.1:${fake.port}`,
    handshakeTimeout: 300,
  }).catch((e) => e);
  assert.ok(isError("HANDSHAKE_TIMEOUT")(error));
  assert.match(error.message, /waiting for the proxy to answer CONNECT/);
  assert.ok(Date.now() - started < 3000);
  const peer = await within(accepted);
  await within(peer.readToEnd(), "the client to close the proxy connection");
});

Deno.test("aborting while the proxy has not answered CONNECT rejects with ABORTED", async () => {
  await using fake = new RawServer();
  const accepted = fake.accept();
  const controller = new AbortController();
  const connecting = connect("ws://slow.example.invalid/", {
    proxy: `http://127.0.0.1:${fake.port}`,
    signal: controller.signal,
  }).catch((e) => e);
  const peer = await within(accepted);
  await within(peer.readHead());
  controller.abort();
  assert.ok(isError("ABORTED")(await within(connecting)));
  await within(peer.readToEnd(), "the client to close the proxy connection");
});

Deno.test("a proxy that hangs up or answers garbage is a PROXY_ERROR", async () => {
  for (const answer of ["", "SSH-2.0-OpenSSH\r\n\r\n"]) {
    await using fake = new RawServer();
    const accepted = fake.accept();
    const connecting = connect("ws://x.example.invalid/", {
      proxy: `http://127.0.0.1:${fake.port}`,
    }).catch((e) => e);
    const peer = await within(accepted);
    await within(peer.readHead());
    if (answer !== "") await peer.send(answer);
    peer.close();
    const error = await within(connecting);
    assert.ok(isError("PROXY_ERROR")(error), String(error));
  }
});

Deno.test("an invalid proxy option is a TypeError", async () => {
  for (
    const proxy of [
      "socks5://127.0.0.1:1080",
      "ftp://proxy",
      "http://",
      42 as unknown as string,
    ]
  ) {
    await assert.rejects(
      connect("ws://127.0.0.1:1/", { proxy }),
      (e) => e instanceof TypeError && /proxy/.test(e.message),
      String(proxy),
    );
  }
});

// -- The environment, in a subprocess with a clean one --

const FIXTURE = new URL("./fixtures/proxy_env.ts", import.meta.url).pathname;

/**
 * Runs the fixture's `connect(url, options)` with exactly `env` (plus
 * what Deno itself needs) and `--allow-env` unless `allowEnv` is false.
 */
async function connectWithEnv(
  url: string,
  env: Record<string, string>,
  options: Record<string, unknown> = {},
  allowEnv = true,
): Promise<{ ok: boolean; code?: string; message?: string; url?: string }> {
  const keep: Record<string, string> = {};
  for (const name of ["HOME", "DENO_DIR", "XDG_CACHE_HOME"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) keep[name] = value;
  }
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-config",
      "--allow-net",
      "--allow-read",
      ...(allowEnv ? ["--allow-env"] : []),
      FIXTURE,
      url,
      JSON.stringify(options),
    ],
    clearEnv: true,
    env: { ...keep, NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(15_000),
  }).output();
  const stdout = new TextDecoder().decode(output.stdout).trim();
  const stderr = new TextDecoder().decode(output.stderr).trim();
  assert.equal(output.code, 0, `fixture failed: ${stderr}`);
  return JSON.parse(stdout);
}

Deno.test("HTTP_PROXY and http_proxy carry ws://, HTTPS_PROXY wss://, ALL_PROXY both", async () => {
  await using proxy = await tinyproxy();
  await using plain = serve(echo);
  await using secure = serve(echo, TLS);
  const ca = {
    caFile: new URL("./fixtures/localhost.crt", import.meta.url).pathname,
  };
  const down = `http://127.0.0.1:${closedPort()}`;

  assert.deepEqual(
    await connectWithEnv(urlOf(plain), { HTTP_PROXY: proxy.url }),
    { ok: true, url: urlOf(plain) },
  );
  await proxy.sawConnect(plain.addr.port);

  const lower = await connectWithEnv(urlOf(plain, "/lower"), {
    http_proxy: down,
  });
  assert.equal(lower.code, "CONNECTION_FAILED");
  assert.match(lower.message!, /proxy.*http_proxy/);

  // HTTP_PROXY is not for wss://, HTTPS_PROXY is.
  assert.equal(
    (await connectWithEnv(urlOf(secure, "/", true), { HTTP_PROXY: down }, ca))
      .ok,
    true,
  );
  assert.equal(
    (await connectWithEnv(urlOf(secure, "/", true), {
      HTTPS_PROXY: proxy.url,
      HTTP_PROXY: down,
    }, ca)).ok,
    true,
  );
  await proxy.sawConnect(secure.addr.port);

  // ALL_PROXY comes first, as in Deno's fetch.
  const all = await connectWithEnv(urlOf(plain), {
    ALL_PROXY: down,
    HTTP_PROXY: proxy.url,
  });
  assert.equal(all.code, "CONNECTION_FAILED");
  assert.match(all.message!, /ALL_PROXY/);
});

Deno.test("NO_PROXY, proxy: false, and no env permission connect directly", async () => {
  await using plain = serve(echo);
  const down = `http://127.0.0.1:${closedPort()}`;
  const url = urlOf(plain);
  const localhost = `ws://localhost:${plain.addr.port}/`;
  const direct = [
    [url, { HTTP_PROXY: down, NO_PROXY: "127.0.0.1" }],
    [url, {
      HTTP_PROXY: down,
      NO_PROXY: `example.com, 127.0.0.1:${plain.addr.port}`,
    }],
    [url, { HTTP_PROXY: down, no_proxy: "127.0.0.0/8" }],
    [url, { HTTP_PROXY: down, NO_PROXY: "*" }],
    [localhost, { HTTP_PROXY: down, NO_PROXY: "localhost" }],
    [localhost, { ALL_PROXY: down, NO_PROXY: ".localhost" }],
  ] as const;
  for (const [target, env] of direct) {
    const result = await connectWithEnv(target, env);
    assert.equal(result.ok, true, `${JSON.stringify(env)}: ${result.message}`);
  }
  const proxied = [
    { HTTP_PROXY: down, NO_PROXY: `127.0.0.1:${plain.addr.port + 1}` },
    { HTTP_PROXY: down, NO_PROXY: "127.0.0.2,example.com,0.0.1" },
  ];
  for (const env of proxied) {
    const result = await connectWithEnv(url, env);
    assert.equal(result.code, "CONNECTION_FAILED", JSON.stringify(env));
  }
  assert.equal(
    (await connectWithEnv(url, { HTTP_PROXY: down }, { proxy: false })).ok,
    true,
  );
  // Without --allow-env the variables count as unset: no error, no prompt.
  assert.equal(
    (await connectWithEnv(url, { HTTP_PROXY: down }, {}, false)).ok,
    true,
  );
  // The option wins over the environment, NO_PROXY included.
  const option = await connectWithEnv(
    url,
    { HTTP_PROXY: "http://127.0.0.1:9", NO_PROXY: "*" },
    { proxy: down },
  );
  assert.equal(option.code, "CONNECTION_FAILED");
  // Under CGI, HTTP_PROXY may come from a request's Proxy header: ignored.
  assert.equal(
    (await connectWithEnv(url, { HTTP_PROXY: down, REQUEST_METHOD: "GET" }))
      .ok,
    true,
  );
  // A SOCKS proxy is not silently bypassed.
  const socks = await connectWithEnv(url, {
    ALL_PROXY: "socks5://127.0.0.1:1080",
  });
  assert.equal(socks.code, "PROXY_ERROR");
});

// -- Choosing a proxy: pure --

Deno.test("noProxyMatches() reads host names, suffixes, *, IPs, CIDR blocks and ports", () => {
  const cases: [string, string, number, boolean][] = [
    ["example.com", "example.com", 80, true],
    ["example.com", "api.example.com", 80, true],
    [".example.com", "example.com", 80, true],
    [".example.com", "a.b.example.com", 443, true],
    ["*.example.com", "a.example.com", 443, true],
    ["example.com", "notexample.com", 80, false],
    ["EXAMPLE.com", "example.com", 80, true],
    ["example.com.", "example.com", 80, true],
    ["*", "anything", 1, true],
    ["", "example.com", 80, false],
    [" , example.org , ", "www.example.org", 80, true],
    ["example.com:8080", "example.com", 8080, true],
    ["example.com:8080", "example.com", 80, false],
    ["127.0.0.1", "127.0.0.1", 80, true],
    ["127.0.0.1", "127.0.0.2", 80, false],
    ["0.0.1", "127.0.0.1", 80, false],
    ["10.0.0.0/8", "10.20.30.40", 80, true],
    ["10.0.0.0/8", "11.0.0.1", 80, false],
    ["192.168.1.0/24", "192.168.1.77", 80, true],
    ["192.168.1.128/25", "192.168.1.77", 80, false],
    ["::1", "[::1]", 80, true],
    ["[::1]", "[::1]", 80, true],
    ["[::1]:8080", "[::1]", 8080, true],
    ["[::1]:8080", "[::1]", 80, false],
    ["0:0:0:0:0:0:0:1", "[::1]", 80, true],
    ["fd00::/8", "[fd12:3456::1]", 80, true],
    ["fd00::/8", "[fe80::1]", 80, false],
    ["10.0.0.0/8", "[::1]", 80, false],
    ["example.com", "[::1]", 80, false],
    ["bücher.example", "xn--bcher-kva.example", 80, true],
  ];
  for (const [list, host, port, expected] of cases) {
    assert.equal(
      noProxyMatches(list, host, port),
      expected,
      `${JSON.stringify(list)} vs ${host}:${port}`,
    );
  }
});

Deno.test("proxyFor() picks from the environment as Deno's fetch does", () => {
  const pick = (url: string, env: Record<string, string>) =>
    proxyFor(new URL(url), undefined, (name) => env[name])?.label ?? null;
  assert.equal(pick("ws://a/", {}), null);
  assert.equal(
    pick("ws://a/", { HTTP_PROXY: "http://p:1", HTTPS_PROXY: "http://s:2" }),
    "http://p:1 (HTTP_PROXY)",
  );
  assert.equal(
    pick("wss://a/", { HTTP_PROXY: "http://p:1", HTTPS_PROXY: "http://s:2" }),
    "http://s:2 (HTTPS_PROXY)",
  );
  assert.equal(pick("wss://a/", { HTTP_PROXY: "http://p:1" }), null);
  assert.equal(
    pick("wss://a/", { https_proxy: "s:3128" }),
    "http://s:3128 (https_proxy)",
  );
  assert.equal(
    pick("wss://a/", { HTTPS_PROXY: "http://S:2", https_proxy: "http://s:3" }),
    "http://s:2 (HTTPS_PROXY)",
  );
  assert.equal(
    pick("ws://a/", { ALL_PROXY: "http://all:1", HTTP_PROXY: "http://p:1" }),
    "http://all:1 (ALL_PROXY)",
  );
  // A value that is not a URL is skipped, as Deno skips it.
  assert.equal(
    pick("ws://a/", { ALL_PROXY: "::", HTTP_PROXY: "http://p:1" }),
    "http://p:1 (HTTP_PROXY)",
  );
  assert.equal(
    pick("ws://a.internal/", {
      HTTP_PROXY: "http://p:1",
      NO_PROXY: "internal",
      no_proxy: "other",
    }),
    null,
  );
  assert.equal(
    pick("ws://a.internal/", { HTTP_PROXY: "http://p:1", NO_PROXY: "" }),
    "http://p:1 (HTTP_PROXY)",
  );
  assert.equal(
    pick("ws://a/", { HTTP_PROXY: "http://p:1", REQUEST_METHOD: "GET" }),
    null,
  );
  assert.equal(
    proxyFor(new URL("ws://a/"), false, () => "http://p:1"),
    null,
  );
});

Deno.test("parseProxy() decodes credentials and defaults the port", () => {
  const proxy = parseProxy("https://us%3Aer:p%40ss@[::1]/path", "test");
  assert.ok(typeof proxy !== "string");
  assert.equal(proxy.hostname, "::1");
  assert.equal(proxy.port, 443);
  assert.equal(proxy.secure, true);
  assert.equal(proxy.authorization, `Basic ${btoa("us:er:p@ss")}`);
  assert.equal(proxy.label, "https://[::1] (test)");
  const plain = parseProxy("proxy.corp", "test");
  assert.ok(typeof plain !== "string");
  assert.equal(plain.port, 80);
  assert.equal(plain.authorization, null);
  assert.equal(typeof parseProxy("socks5://p:1080", "test"), "string");
});

// -- Redirects --

function redirect(
  status: number,
  location: string | null,
): ResponseHead {
  const headers = new Headers();
  if (location !== null) headers.set("location", location);
  return { version: "HTTP/1.1", status, statusText: "Found", headers };
}

Deno.test("redirectTarget() resolves Location and maps http: to ws:", () => {
  const from = new URL("wss://a.example/chat/room?x=1");
  const to = (location: string | null, base = from) => {
    const next = redirectTarget(redirect(302, location), base);
    return next instanceof URL ? next.href : next.code;
  };
  assert.equal(to("/other"), "wss://a.example/other");
  assert.equal(to("lobby"), "wss://a.example/chat/lobby");
  assert.equal(to("https://b.example:8443/x#frag"), "wss://b.example:8443/x");
  assert.equal(to("wss://b.example/"), "wss://b.example/");
  assert.equal(to("http://b.example/"), "BAD_REDIRECT");
  assert.equal(to("ws://b.example/"), "BAD_REDIRECT");
  assert.equal(to(null), "BAD_REDIRECT");
  assert.equal(to("mailto:a@b"), "BAD_REDIRECT");
  assert.equal(to("http://b.example/", new URL("ws://a/")), "ws://b.example/");
  assert.equal(
    to("https://b.example/", new URL("ws://a/")),
    "wss://b.example/",
  );
});

Deno.test("followRedirects follows 301, 302, 303, 307 and 308 to the new path", async () => {
  for (const status of [301, 302, 303, 307, 308]) {
    await using server = serve(echo, {
      upgrade(req) {
        if (new URL(req.url).pathname === "/old") {
          return new Response(null, {
            status,
            headers: { Location: "/new?x=1" },
          });
        }
      },
    });
    const sock = await within(
      connect(urlOf(server, "/old"), { followRedirects: true }),
    );
    assert.equal(sock.request.url, urlOf(server, "/new?x=1"));
    await sock.write(`${status}`, "text");
    assert.deepEqual(await within(sock.read()), {
      type: "text",
      data: `${status}`,
    });
    await within(sock.close());
  }
});

Deno.test("without followRedirects a redirect is a BAD_HANDSHAKE with its status", async () => {
  await using server = serve(echo, {
    upgrade: () =>
      new Response(null, { status: 302, headers: { Location: "/x" } }),
  });
  const error: WebSocketError = await connect(urlOf(server)).catch((e) => e);
  assert.ok(isError("BAD_HANDSHAKE")(error));
  assert.match(error.message, /302 Found/);
});

Deno.test("a cross-origin redirect drops Authorization and Cookie, a same-origin one keeps them", async () => {
  const seen: Headers[] = [];
  await using other = serve(async (sock) => {
    seen.push(sock.request.headers);
    await readAll(sock);
  });
  await using first = serve(async (sock) => {
    seen.push(sock.request.headers);
    await readAll(sock);
  }, {
    upgrade(req) {
      const path = new URL(req.url).pathname;
      if (path === "/same") {
        return new Response(null, {
          status: 307,
          headers: { Location: "/here" },
        });
      }
      if (path === "/away") {
        return new Response(null, {
          status: 307,
          // Another port is another origin.
          headers: { Location: `http://127.0.0.1:${other.addr.port}/there` },
        });
      }
    },
  });
  const headers = {
    Authorization: "Bearer secret",
    Cookie: "session=1",
    "X-Trace": "kept",
  };
  for (const path of ["/same", "/away"]) {
    const sock = await within(
      connect(urlOf(first, path), { headers, followRedirects: true }),
    );
    await within(sock.close());
  }
  assert.equal(seen.length, 2);
  assert.equal(seen[0].get("authorization"), "Bearer secret");
  assert.equal(seen[0].get("cookie"), "session=1");
  assert.equal(seen[1].get("authorization"), null);
  assert.equal(seen[1].get("cookie"), null);
  assert.equal(seen[1].get("x-trace"), "kept");
});

Deno.test("a wss: to ws: redirect is refused with BAD_REDIRECT", async () => {
  await using plain = serve(echo);
  await using secure = serve(echo, {
    ...TLS,
    upgrade: () =>
      new Response(null, {
        status: 301,
        headers: { Location: urlOf(plain) },
      }),
  });
  const error: WebSocketError = await connect(urlOf(secure, "/", true), {
    caCerts: [CERT],
    followRedirects: true,
    headers: { Authorization: "Bearer secret" },
  }).catch((e) => e);
  assert.ok(isError("BAD_REDIRECT")(error));
  assert.match(error.message, /wss: to ws:/);
  assert.equal(plain.connections, 0);
});

Deno.test("more redirects than maxRedirects is a BAD_REDIRECT", async () => {
  let hops = 0;
  await using server = serve(echo, {
    upgrade(req) {
      hops++;
      const n = Number(new URL(req.url).pathname.slice(1));
      return new Response(null, {
        status: 302,
        headers: { Location: `/${n + 1}` },
      });
    },
  });
  const limited: WebSocketError = await connect(urlOf(server, "/0"), {
    followRedirects: true,
    maxRedirects: 2,
  }).catch((e) => e);
  assert.ok(isError("BAD_REDIRECT")(limited));
  assert.match(limited.message, /more than 2 redirects/);
  assert.equal(hops, 3);
  hops = 0;
  const loop: WebSocketError = await connect(urlOf(server, "/0"), {
    followRedirects: true,
  }).catch((e) => e);
  assert.ok(isError("BAD_REDIRECT")(loop));
  assert.equal(hops, 11);
  await assert.rejects(
    connect(urlOf(server), { followRedirects: true, maxRedirects: -1 }),
    TypeError,
  );
});

Deno.test("a redirect without Location is a BAD_REDIRECT", async () => {
  await using server = serve(echo, {
    upgrade: () => new Response(null, { status: 301 }),
  });
  const error: WebSocketError = await connect(urlOf(server), {
    followRedirects: true,
  }).catch((e) => e);
  assert.ok(isError("BAD_REDIRECT")(error));
  assert.match(error.message, /no Location/);
});
