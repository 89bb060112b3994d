/**
 * The chat demo (examples/chat/), run as `deno task start` runs it: first
 * driven by our own client, then end to end in headless Chromium over the
 * DevTools protocol (spoken with this library's `connect`), including a
 * server restart the pages must recover from.
 *
 * The browser test needs /usr/bin/chromium (`.ci/run` installs it) and
 * leaves a screenshot in `.artifacts/` (or `$ARTIFACTS_DIR`).
 */

import assert from "node:assert/strict";
import { connect, type Message, type Socket, WebSocketError } from "../mod.ts";
import { sleep, stopChild, within } from "./_helpers.ts";
import { CHROMIUM, Chromium, HAS_CHROMIUM } from "./_chromium.ts";

const ROOT = new URL("../", import.meta.url);
const CHAT_DIR = new URL("examples/chat/", ROOT).pathname;

const decoder = new TextDecoder();

// -- The chat server process --

/** `examples/chat/server.ts` in a child process, as `deno task start` runs it. */
class ChatServer implements AsyncDisposable {
  readonly port: number;
  readonly #child: Deno.ChildProcess;
  readonly #output: Promise<string>;
  #stopped: Promise<Deno.CommandStatus> | null = null;

  private constructor(
    child: Deno.ChildProcess,
    port: number,
    output: Promise<string>,
  ) {
    this.#child = child;
    this.port = port;
    this.#output = output;
  }

  /** Starts the server on `port` (0: any) and waits for its URL line. */
  static async start(
    port = 0,
    env: Record<string, string> = {},
  ): Promise<ChatServer> {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net",
        "--allow-env",
        `--allow-read=${CHAT_DIR}`,
        `${CHAT_DIR}server.ts`,
      ],
      env: { ...env, PORT: String(port), NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const url = Promise.withResolvers<number>();
    let text = "";
    const collect = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream) {
        text += decoder.decode(chunk, { stream: true });
        const match = /listening on http:\/\/127\.0\.0\.1:(\d+)\//.exec(text);
        if (match) url.resolve(Number(match[1]));
      }
    };
    const output = Promise.all([
      collect(child.stdout),
      collect(child.stderr),
    ]).then(() => {
      url.reject(new Error(`The chat server exited early:\n${text}`));
      return text;
    });
    try {
      return new ChatServer(
        child,
        await within(url.promise, "the chat server to start"),
        output,
      );
    } catch (error) {
      child.kill("SIGKILL");
      await child.status;
      await output;
      throw error;
    }
  }

  get base(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** SIGTERM (a graceful close), SIGKILL if that takes too long. */
  stop(): Promise<Deno.CommandStatus> {
    this.#stopped ??= (async () => {
      const status = await stopChild(this.#child, 5000);
      await this.#output;
      return status;
    })();
    return this.#stopped;
  }

  /** Everything the server printed (after it stopped). */
  output(): Promise<string> {
    return this.#output;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** The next text message of `sock` as JSON, skipping pings and pongs. */
async function nextEvent(sock: Socket): Promise<Record<string, unknown>> {
  for (;;) {
    const msg: Message | null = await within(sock.read(), "a chat event");
    if (msg === null || msg.type === "close") {
      throw new Error(`The chat closed: ${JSON.stringify(msg)}`);
    }
    if (msg.type === "text") return JSON.parse(msg.data);
  }
}

// -- The chat over our own client --

Deno.test("the chat demo serves its page and health check, and chats over topics", async () => {
  await using server = await ChatServer.start();
  const base = server.base;

  const page = await within(fetch(`http://${base}/`));
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
  assert.match(await page.text(), /<title>silly chat<\/title>/);
  const health = await within(fetch(`http://${base}/health`));
  assert.deepEqual(await health.json(), { ok: true, online: 0, history: 0 });
  const missing = await within(fetch(`http://${base}/nope`));
  assert.equal(missing.status, 404);
  await missing.body?.cancel();

  const ann = await within(connect(`ws://${base}/ws?nick=ann`));
  const welcome = await nextEvent(ann);
  assert.equal(welcome.type, "welcome");
  assert.equal(welcome.nick, "ann");
  assert.deepEqual(welcome.history, []);
  assert.deepEqual((await nextEvent(ann)).type, "join");

  await ann.write(JSON.stringify({ text: "  first!  " }), "text");
  const first = await nextEvent(ann);
  assert.equal(first.type, "message");
  assert.equal(first.nick, "ann");
  assert.equal(first.text, "first!");

  // A newcomer gets the history; everyone hears the join.
  const bob = await within(connect(`ws://${base}/ws?nick=bob`));
  const bobWelcome = await nextEvent(bob);
  assert.deepEqual(
    (bobWelcome.history as { text: string }[]).map((m) => m.text),
    ["first!"],
  );
  assert.deepEqual(bobWelcome.online, ["ann", "bob"]);
  const join = await nextEvent(ann);
  assert.equal(join.type, "join");
  assert.equal(join.nick, "bob");
  assert.deepEqual(join.online, ["ann", "bob"]);
  assert.equal((await nextEvent(bob)).type, "join");

  await bob.write(JSON.stringify({ text: "hi ann" }), "text");
  for (const sock of [ann, bob]) {
    const msg = await nextEvent(sock);
    assert.equal(msg.nick, "bob");
    assert.equal(msg.text, "hi ann");
  }

  await within(bob.close());
  const leave = await nextEvent(ann);
  assert.equal(leave.type, "leave");
  assert.equal(leave.nick, "bob");
  assert.deepEqual(leave.online, ["ann"]);
  await within(ann.close());
});

Deno.test("a newcomer to the chat demo gets the last HISTORY messages", async () => {
  await using server = await ChatServer.start(0, { HISTORY: "2" });
  const ann = await within(connect(`ws://${server.base}/ws?nick=ann`));
  assert.equal((await nextEvent(ann)).type, "welcome");
  assert.equal((await nextEvent(ann)).type, "join");
  for (const text of ["one", "two", "three"]) {
    await ann.write(JSON.stringify({ text }), "text");
    assert.equal((await nextEvent(ann)).text, text);
  }
  const bob = await within(connect(`ws://${server.base}/ws?nick=bob`));
  const welcome = await nextEvent(bob);
  assert.deepEqual(
    (welcome.history as { text: string }[]).map((m) => m.text),
    ["two", "three"],
  );
  await within(Promise.all([ann.close(), bob.close()]));
});

Deno.test("the chat demo's upgrade hook rejects a bad path, nickname or Origin", async () => {
  await using server = await ChatServer.start();
  const base = server.base;
  const cases: [string, Record<string, string>, RegExp][] = [
    [`ws://${base}/chat?nick=ann`, {}, / 404 /],
    [`ws://${base}/ws`, {}, / 400 /],
    [`ws://${base}/ws?nick=${"x".repeat(25)}`, {}, / 400 /],
    [`ws://${base}/ws?nick=ann`, { Origin: "http://evil.example" }, / 403 /],
    [`ws://${base}/ws?nick=ann`, { Origin: "null" }, / 403 /],
  ];
  for (const [url, headers, status] of cases) {
    const error = await within(connect(url, { headers }).catch((e) => e));
    assert.ok(error instanceof WebSocketError, String(error));
    assert.equal(error.code, "BAD_HANDSHAKE");
    assert.match(error.message, status, url);
  }
  // Its own page's Origin is fine.
  const sock = await within(
    connect(`ws://${base}/ws?nick=ann`, {
      headers: { Origin: `http://${base}` },
    }),
  );
  assert.equal((await nextEvent(sock)).type, "welcome");
  await within(sock.close());
});

// -- In a real browser --

/** A DevTools protocol connection to the browser, over this library. */
class DevTools {
  readonly #sock: Socket;
  readonly #pending = new Map<
    number,
    PromiseWithResolvers<Record<string, unknown>>
  >();
  readonly #loop: Promise<void>;
  #nextId = 0;
  /** Console errors and exceptions of the pages, for failure messages. */
  readonly problems: string[] = [];

  constructor(sock: Socket) {
    this.#sock = sock;
    this.#loop = this.#read();
  }

  async #read(): Promise<void> {
    for await (const msg of this.#sock) {
      if (msg.type !== "text") continue;
      const data = JSON.parse(msg.data);
      if (typeof data.id === "number") {
        const pending = this.#pending.get(data.id);
        this.#pending.delete(data.id);
        if (data.error) {
          pending?.reject(
            new Error(`DevTools error: ${JSON.stringify(data.error)}`),
          );
        } else pending?.resolve(data.result);
      } else if (data.method === "Runtime.exceptionThrown") {
        this.problems.push(JSON.stringify(data.params.exceptionDetails));
      } else if (
        data.method === "Runtime.consoleAPICalled" &&
        data.params.type === "error"
      ) {
        this.problems.push(JSON.stringify(data.params.args));
      }
    }
    for (const pending of this.#pending.values()) {
      pending.reject(new Error("DevTools connection closed"));
    }
  }

  send(
    method: string,
    params: Record<string, unknown> = {},
    sessionId?: string,
  ): Promise<Record<string, unknown>> {
    const id = ++this.#nextId;
    const pending = Promise.withResolvers<Record<string, unknown>>();
    this.#pending.set(id, pending);
    this.#sock.write(JSON.stringify({ id, method, params, sessionId }), "text")
      .catch(pending.reject);
    return within(pending.promise, method);
  }

  async close(): Promise<void> {
    await this.#sock.close();
    await this.#loop;
  }
}

/** One browser tab, attached with its own DevTools session. */
class Page {
  readonly #devtools: DevTools;
  readonly #session: string;

  private constructor(devtools: DevTools, session: string) {
    this.#devtools = devtools;
    this.#session = session;
  }

  static async open(devtools: DevTools, url: string): Promise<Page> {
    const { targetId } = await devtools.send("Target.createTarget", {
      url: "about:blank",
    });
    const { sessionId } = await devtools.send("Target.attachToTarget", {
      targetId,
      flatten: true,
    });
    const page = new Page(devtools, sessionId as string);
    await page.#send("Runtime.enable");
    await page.#send("Page.enable");
    await page.#send("Emulation.setDeviceMetricsOverride", {
      width: 720,
      height: 560,
      deviceScaleFactor: 1,
      mobile: false,
    });
    await page.#send("Page.navigate", { url });
    return page;
  }

  #send(method: string, params: Record<string, unknown> = {}) {
    return this.#devtools.send(method, params, this.#session);
  }

  /** Evaluates `expression` in the page and returns its JSON value. */
  async eval<T>(expression: string): Promise<T> {
    const result = await this.#send("Runtime.evaluate", {
      expression,
      returnByValue: true,
      awaitPromise: true,
    });
    if (result.exceptionDetails) {
      throw new Error(
        `Page exception: ${JSON.stringify(result.exceptionDetails)}`,
      );
    }
    return (result.result as { value: T }).value;
  }

  /** Polls `expression` until it is truthy, for at most `ms`. */
  async waitFor(expression: string, what: string, ms = 8000): Promise<void> {
    const deadline = Date.now() + ms;
    let last: unknown;
    while (Date.now() < deadline) {
      try {
        if (await this.eval<boolean>(expression)) return;
      } catch (error) {
        // The page may be between documents while it loads.
        last = error;
      }
      await sleep(50);
    }
    const status = await this.status().catch(() => "unknown");
    throw new Error(
      `Timed out after ${ms} ms waiting for ${what} (status ${status}${
        last ? `, last error ${last}` : ""
      }; page problems: ${this.#devtools.problems.join("; ") || "none"})`,
    );
  }

  /** The connection state the page shows. */
  status(): Promise<string> {
    return this.eval<string>(`document.getElementById("status").dataset.state`);
  }

  /** The texts of the chat messages the page shows. */
  messages(): Promise<string[]> {
    return this.eval<string[]>(
      `[...document.querySelectorAll("#log .msg .text")].map((e) => e.textContent)`,
    );
  }

  /** Types `text` into the message box and presses Enter, as a user would. */
  async say(text: string): Promise<void> {
    await this.eval(`document.getElementById("text").focus()`);
    await this.#send("Input.insertText", { text });
    for (const type of ["keyDown", "keyUp"]) {
      await this.#send("Input.dispatchKeyEvent", {
        type,
        key: "Enter",
        code: "Enter",
        windowsVirtualKeyCode: 13,
        ...(type === "keyDown" ? { text: "\r" } : {}),
      });
    }
  }

  /** A PNG of the page. */
  async screenshot(): Promise<Uint8Array> {
    const { data } = await this.#send("Page.captureScreenshot", {
      format: "png",
    });
    return Uint8Array.from(atob(data as string), (c) => c.charCodeAt(0));
  }
}

/** Headless Chromium with a DevTools connection. */
class Browser implements AsyncDisposable {
  readonly devtools: DevTools;
  readonly #chromium: Chromium;

  private constructor(chromium: Chromium, devtools: DevTools) {
    this.#chromium = chromium;
    this.devtools = devtools;
  }

  static async launch(): Promise<Browser> {
    const chromium = await Chromium.launch({
      devtools: true,
      profilePrefix: "chat_e2e_chromium_",
    });
    try {
      const url = await within(
        chromium.devtoolsUrl,
        "Chromium to start",
        15_000,
      );
      const devtools = new DevTools(await within(connect(url)));
      return new Browser(chromium, devtools);
    } catch (error) {
      await chromium.stop("SIGKILL");
      throw error;
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.devtools.send("Browser.close").catch(() => {});
    await this.devtools.close().catch(() => {});
    // Asked to close above; killed if it has not within 3 s.
    await this.#chromium.stop(null);
  }
}

/** Saves a test artifact (never committed: the folder ignores itself). */
async function saveArtifact(name: string, bytes: Uint8Array): Promise<string> {
  const dir = Deno.env.get("ARTIFACTS_DIR") ??
    new URL(".artifacts/", ROOT).pathname;
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/.gitignore`, "*\n");
  const path = `${dir.replace(/\/$/, "")}/${name}`;
  await Deno.writeFile(path, bytes);
  return path;
}

const ONLINE = `document.getElementById("status").dataset.state === "online"`;

function shows(text: string): string {
  return `[...document.querySelectorAll("#log .msg .text")].some((e) => e.textContent === ${
    JSON.stringify(text)
  })`;
}

Deno.test({
  name: HAS_CHROMIUM
    ? "in headless Chromium, two pages chat, and reconnect after a server restart"
    : `in headless Chromium, two pages chat (skipped: ${CHROMIUM} not found; .ci/run installs it)`,
  ignore: !HAS_CHROMIUM,
  async fn() {
    let server = await ChatServer.start();
    const port = server.port;
    try {
      await using browser = await Browser.launch();
      const url = (nick: string) => `http://127.0.0.1:${port}/?nick=${nick}`;
      const ann = await Page.open(browser.devtools, url("ann"));
      await ann.waitFor(ONLINE, "ann's page to connect");
      const bob = await Page.open(browser.devtools, url("bob"));
      await bob.waitFor(ONLINE, "bob's page to connect");
      await ann.waitFor(
        `document.getElementById("log").textContent.includes("bob joined")`,
        "ann's page to show that bob joined",
      );

      // One sends, the other shows it.
      await ann.say("Hello from ann!");
      await bob.waitFor(shows("Hello from ann!"), "bob's page to show it");
      await ann.waitFor(shows("Hello from ann!"), "ann's page to show it");
      assert.equal(
        await ann.eval(
          `document.querySelector("#log .msg.mine .nick").textContent`,
        ),
        "ann",
      );

      // The server restarts: both pages notice and reconnect with backoff.
      await server.stop();
      await ann.waitFor(
        `document.getElementById("status").dataset.state === "reconnecting"`,
        "ann's page to show it lost the connection",
      );
      assert.match(
        await ann.eval<string>(`document.getElementById("status").textContent`),
        /^Reconnecting in \d+ s/,
      );
      await saveArtifact("chat_e2e_reconnecting.png", await ann.screenshot());
      server = await ChatServer.start(port);
      await ann.waitFor(ONLINE, "ann's page to reconnect");
      await bob.waitFor(ONLINE, "bob's page to reconnect");

      await bob.say("Back again, ann?");
      await ann.waitFor(shows("Back again, ann?"), "ann's page to show it");
      // What was on the page before the restart is still there, once.
      assert.deepEqual(await ann.messages(), [
        "Hello from ann!",
        "Back again, ann?",
      ]);
      await ann.waitFor(
        `document.getElementById("log").textContent.includes("Reconnected")`,
        "ann's page to say it reconnected",
      );

      const path = await saveArtifact("chat_e2e.png", await ann.screenshot());
      const png = await Deno.readFile(path);
      // A PNG signature, and more than an empty page.
      assert.deepEqual([...png.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
      assert.ok(png.length > 5000, `screenshot of ${png.length} bytes`);
    } finally {
      await server.stop();
    }
  },
});
