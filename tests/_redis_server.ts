/**
 * A real `redis-server` (Debian's) for the broker tests, on a free loopback
 * port of its own with nothing saved to disk, and a tiny RESP client to
 * give it commands (CONFIG SET, PUBLISH of raw bytes, PUBSUB NUMSUB).
 *
 * @module
 */

import { freePort, sleep as delay } from "./_helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A redis-server process; dispose it with `await using`. */
export class RedisServer implements AsyncDisposable {
  readonly port: number;
  #process: Deno.ChildProcess | null = null;

  private constructor(port: number) {
    this.port = port;
  }

  /** Starts a server on a free port and waits until it answers. */
  static async start(port = freePort()): Promise<RedisServer> {
    const server = new RedisServer(port);
    await server.restart();
    return server;
  }

  /** The running server's process id, `null` after a kill. */
  get pid(): number | null {
    return this.#process?.pid ?? null;
  }

  /** `redis://127.0.0.1:<port>`. */
  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts the server again on the same port (after a kill). */
  async restart(): Promise<void> {
    if (this.#process !== null) throw new Error("redis-server is running");
    this.#process = spawnRedis(this.port);
    const deadline = Date.now() + 5000;
    for (;;) {
      try {
        if (await this.command("PING") === "PONG") return;
      } catch (error) {
        if (Date.now() > deadline) throw error;
      }
      await delay(20);
    }
  }

  /** `kill -9`: Redis vanishes with its clients' connections. */
  async kill(): Promise<void> {
    const process = this.#process;
    if (process === null) return;
    this.#process = null;
    process.kill("SIGKILL");
    await process.status;
  }

  /** Runs one command; resolves with its reply (arrays flattened to strings). */
  async command(...args: (string | Uint8Array)[]): Promise<unknown> {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: this.port });
    const parts: Uint8Array[] = [encoder.encode(`*${args.length}\r\n`)];
    for (const arg of args) {
      const bytes = typeof arg === "string" ? encoder.encode(arg) : arg;
      parts.push(encoder.encode(`$${bytes.length}\r\n`), bytes, CRLF);
    }
    for (const part of parts) {
      let offset = 0;
      while (offset < part.length) {
        offset += await conn.write(part.subarray(offset));
      }
    }
    return await new RespReader(conn).reply();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
  }
}

const CRLF = encoder.encode("\r\n");

function spawnRedis(port: number): Deno.ChildProcess {
  try {
    return new Deno.Command("redis-server", {
      args: [
        "--save",
        "",
        "--appendonly",
        "no",
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--daemonize",
        "no",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(
        "redis-server is not installed: apt-get install redis-server (.ci/run does)",
      );
    }
    throw error;
  }
}

/** Reads one RESP2 reply (enough for the tests' commands). */
class RespReader {
  #conn: Deno.Conn;
  #buffer = new Uint8Array(0);

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  async #line(): Promise<string> {
    for (;;) {
      const end = this.#buffer.indexOf(10);
      if (end >= 0) {
        const line = decoder.decode(this.#buffer.subarray(0, end - 1));
        this.#buffer = this.#buffer.subarray(end + 1);
        return line;
      }
      await this.#more();
    }
  }

  async #more(): Promise<void> {
    const chunk = new Uint8Array(4096);
    const n = await this.#conn.read(chunk);
    if (n === null) throw new Error("Redis closed the connection");
    const next = new Uint8Array(this.#buffer.length + n);
    next.set(this.#buffer);
    next.set(chunk.subarray(0, n), this.#buffer.length);
    this.#buffer = next;
  }

  async reply(): Promise<unknown> {
    const line = await this.#line();
    const rest = line.slice(1);
    switch (line[0]) {
      case "+":
        return rest;
      case "-":
        throw new Error(`Redis: ${rest}`);
      case ":":
        return Number(rest);
      case "$": {
        const length = Number(rest);
        if (length < 0) return null;
        while (this.#buffer.length < length + 2) await this.#more();
        const text = decoder.decode(this.#buffer.subarray(0, length));
        this.#buffer = this.#buffer.subarray(length + 2);
        return text;
      }
      case "*": {
        const items: unknown[] = [];
        for (let i = 0; i < Number(rest); i++) items.push(await this.reply());
        return items;
      }
      default:
        throw new Error(`Redis: unexpected reply ${JSON.stringify(line)}`);
    }
  }
}

/**
 * A server process on the broker (`tests/fixtures/broker_node.ts`): its
 * port, its output, and a way to stop it.
 */
export class BrokerNode implements AsyncDisposable {
  readonly port: number;
  readonly process: Deno.ChildProcess;
  #output: Promise<string>;

  private constructor(
    port: number,
    process: Deno.ChildProcess,
    output: Promise<string>,
  ) {
    this.port = port;
    this.process = process;
    this.#output = output;
  }

  /** Starts a node on `redisUrl` and waits until it listens. */
  static async start(redisUrl: string): Promise<BrokerNode> {
    const fixture = new URL("./fixtures/broker_node.ts", import.meta.url);
    const process = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net", "--allow-env", fixture.pathname, redisUrl],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const listening = Promise.withResolvers<number>();
    let text = "";
    const read = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        text += chunk;
        const match = /listening (\d+)/.exec(text);
        if (match) listening.resolve(Number(match[1]));
      }
    };
    const output = Promise.all([read(process.stdout), read(process.stderr)])
      .then(() => {
        listening.reject(new Error(`Node exited early:\n${text}`));
        return text;
      });
    const timer = setTimeout(
      () => listening.reject(new Error(`Node did not start:\n${text}`)),
      10_000,
    );
    try {
      return new BrokerNode(await listening.promise, process, output);
    } catch (error) {
      process.kill("SIGKILL");
      await process.status;
      await output;
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** `ws://127.0.0.1:<port>/?topic=<topic>`: a socket subscribed to `topic`. */
  url(topic: string): string {
    return `ws://127.0.0.1:${this.port}/?topic=${encodeURIComponent(topic)}`;
  }

  /** Stops the node (SIGTERM: it closes its server); resolves with its output. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<string> {
    try {
      this.process.kill(signal);
    } catch {
      // Exited already.
    }
    await this.process.status;
    return await this.#output;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop("SIGKILL");
  }
}
