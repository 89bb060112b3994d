/**
 * permessage-deflate benchmark, three parts:
 *
 * 1. `codec`: the compressor and decompressor alone (src/deflate_codec.ts) on a
 *    JSON-like payload at levels 1 and 6, with and without context
 *    takeover: ratio, and MB/s of uncompressed data each way.
 * 2. `echo`: our client sends JSON-like messages to our server in another
 *    process, which echoes them, with compression off and on (level 1,
 *    level 6, level 1 without context takeover). Reported: messages per
 *    second, each process's CPU time per message (both compress what they
 *    send and inflate what they receive), and the bytes of one message on
 *    the wire (from the same codec, same settings, same sequence).
 * 3. `memory`: 1,000 idle connections to a server in another process,
 *    each after one compressed message each way (so the zlib state the
 *    connection keeps is allocated). Reported: the server's RSS per
 *    connection above the same server with none, for compression off, on,
 *    `serverNoContextTakeover` and both no-context-takeover settings.
 *
 * Run: deno run --allow-net --allow-run --allow-read --allow-env bench/deflate.ts
 * Flags: --parts codec,echo,memory  --messages 20000  --size 2048
 *        --connections 1000  --inflight 64
 *
 * @module
 */

import process from "node:process";
import {
  type CompressionOptions,
  connect,
  listen,
  type Socket,
} from "../mod.ts";
import { negotiateDeflate } from "../src/deflate.ts";
import { compressionConfig, PerMessageDeflate } from "../src/deflate_codec.ts";

const encoder = new TextEncoder();

function flags(args: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < args.length; i += 2) {
    if (!args[i].startsWith("--")) throw new TypeError(`Bad flag ${args[i]}`);
    out[args[i].slice(2)] = args[i + 1];
  }
  return out;
}

/**
 * A JSON-like message of about `size` bytes, different for each `seed`:
 * records with ids, names, e-mails, numbers, booleans and tags, as an API
 * or a game state would send.
 */
function jsonMessage(size: number, seed: number): string {
  const items = [];
  let length = 2;
  for (let i = 0; length < size; i++) {
    const n = seed * 1000 + i;
    const item = JSON.stringify({
      id: n,
      user: `user-${(n * 7919) % 5000}`,
      email: `user${(n * 31) % 997}@example.com`,
      online: n % 3 === 0,
      score: ((n * 37) % 10_000) / 10,
      tags: ["alpha", "beta", "gamma", "delta"].slice(0, n % 5),
    });
    items.push(item);
    length += item.length + 1;
  }
  return `[${items.join(",")}]`;
}

function round(value: number, digits = 1): string {
  return value.toFixed(digits);
}

function codecPair(options: CompressionOptions, maxMessageSize = 1 << 26) {
  const config = compressionConfig(options)!;
  const agreed = negotiateDeflate(
    "permessage-deflate; client_max_window_bits",
    config,
  )!;
  const sender = new PerMessageDeflate({
    client: false,
    params: agreed.params,
    config,
    maxMessageSize,
  });
  const receiver = new PerMessageDeflate({
    client: true,
    params: agreed.params,
    config,
    maxMessageSize,
  });
  return { sender, receiver };
}

// -------------------------------------------------------------- codec

function benchCodec(): void {
  console.log("\n## codec: src/deflate_codec.ts alone, JSON-like payload\n");
  console.log(
    "| size | level | context takeover | ratio | deflate MB/s | inflate MB/s |",
  );
  console.log("|---:|---:|---|---:|---:|---:|");
  for (const size of [1024, 16 * 1024, 128 * 1024]) {
    const messages = Array.from(
      { length: 64 },
      (_, i) => encoder.encode(jsonMessage(size, i)),
    );
    for (const level of [1, 6]) {
      for (const takeover of [true, false]) {
        const { sender, receiver } = codecPair({
          level,
          serverNoContextTakeover: !takeover,
        });
        const run = (ms: number) => {
          let bytes = 0, compressedBytes = 0, deflateMs = 0, inflateMs = 0;
          const end = performance.now() + ms;
          while (performance.now() < end) {
            for (const message of messages) {
              const t0 = performance.now();
              const compressed = sender.compress(message)!;
              const t1 = performance.now();
              receiver.inflate(compressed, true, () => true);
              inflateMs += performance.now() - t1;
              deflateMs += t1 - t0;
              bytes += message.length;
              compressedBytes += compressed.length;
            }
          }
          return { bytes, compressedBytes, deflateMs, inflateMs };
        };
        run(200); // warm-up
        const r = run(1000);
        console.log(
          `| ${size} | ${level} | ${takeover ? "yes" : "no"} | ${
            round(r.bytes / r.compressedBytes, 2)
          } | ${round(r.bytes / r.deflateMs / 1000, 0)} | ${
            round(r.bytes / r.inflateMs / 1000, 0)
          } |`,
        );
        sender.close();
        receiver.close();
      }
    }
  }
}

// -------------------------------------------------------------- server child

/** The server process: echoes; answers `stats` on stdin with its CPU time and memory. */
async function runServer(compression: string): Promise<void> {
  const options = JSON.parse(compression) as false | CompressionOptions;
  const sockets = new Set<Socket>();
  const server = listen({
    addr: "127.0.0.1:0",
    backlog: 4096,
    compression: options,
    async handler(sock) {
      sockets.add(sock);
      for await (const msg of sock) {
        if (msg.type === "text" || msg.type === "binary") {
          sock.write(msg.data, msg.type);
        }
      }
      sockets.delete(sock);
    },
  });
  console.log(JSON.stringify({ port: server.addr.port }));
  const gc = (globalThis as { gc?: () => void }).gc;
  const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
  let pending = "";
  for await (const text of lines) {
    pending += text;
    while (pending.includes("\n")) {
      const line = pending.slice(0, pending.indexOf("\n"));
      pending = pending.slice(line.length + 1);
      if (line === "stats") {
        for (let i = 0; i < 3; i++) gc?.();
        await new Promise((resolve) => setTimeout(resolve, 50));
        const { user, system } = process.cpuUsage();
        const memory = Deno.memoryUsage();
        console.log(JSON.stringify({
          cpuMs: (user + system) / 1000,
          rss: memory.rss,
          heapUsed: memory.heapUsed,
          external: memory.external,
          sockets: sockets.size,
        }));
      }
    }
  }
  await server.close();
}

/** A server child and its stdout lines. */
class ServerChild {
  readonly port: number;
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: AsyncIterator<string>;

  private constructor(
    child: Deno.ChildProcess,
    lines: AsyncIterator<string>,
    port: number,
  ) {
    this.#child = child;
    this.#lines = lines;
    this.port = port;
    this.#writer = child.stdin.getWriter();
  }

  static async start(compression: false | CompressionOptions) {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net",
        "--allow-read",
        "--v8-flags=--expose-gc",
        new URL(import.meta.url).pathname,
        "--serve",
        JSON.stringify(compression),
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const lines = (async function* () {
      let pending = "";
      for await (
        const text of child.stdout.pipeThrough(new TextDecoderStream())
      ) {
        pending += text;
        let at;
        while ((at = pending.indexOf("\n")) !== -1) {
          yield pending.slice(0, at);
          pending = pending.slice(at + 1);
        }
      }
    })();
    const first = await lines.next();
    return new ServerChild(
      child,
      lines,
      JSON.parse(first.value as string).port,
    );
  }

  async stats(): Promise<
    { cpuMs: number; rss: number; heapUsed: number; external: number }
  > {
    await this.#writer.write(encoder.encode("stats\n"));
    return JSON.parse((await this.#lines.next()).value as string);
  }

  async stop(): Promise<void> {
    await this.#writer.close();
    await this.#child.status;
  }
}

function cpuMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

// -------------------------------------------------------------- echo

const ECHO_MODES: [string, false | CompressionOptions][] = [
  ["off", false],
  ["level 1 (default)", { threshold: 0 }],
  ["level 6", { threshold: 0, level: 6 }],
  ["level 1, no context takeover", {
    threshold: 0,
    serverNoContextTakeover: true,
    clientNoContextTakeover: true,
  }],
];

async function benchEcho(
  count: number,
  size: number,
  inflight: number,
): Promise<void> {
  console.log(
    `\n## echo: ${count} JSON-like messages of ${size} bytes, ${inflight} in flight, client and server in two processes\n`,
  );
  console.log(
    "| compression | msg/s | MB/s | server CPU µs/msg | client CPU µs/msg | bytes/msg on the wire |",
  );
  console.log("|---|---:|---:|---:|---:|---:|");
  const messages = Array.from(
    { length: 256 },
    (_, i) => jsonMessage(size, i),
  );
  const payloadBytes = encoder.encode(messages[0]).length;
  for (const [name, compression] of ECHO_MODES) {
    const server = await ServerChild.start(compression);
    const sock = await connect(`ws://127.0.0.1:${server.port}`, {
      compression,
    });
    const send = async (n: number) => {
      let sent = 0, received = 0;
      const pump = async () => {
        while (received < n) {
          const msg = await sock.read();
          if (msg === null) throw new Error("Closed");
          if (msg.type === "text") received++;
          while (sent < n && sent - received < inflight) {
            sock.write(messages[sent++ % messages.length], "text");
          }
        }
      };
      while (sent < Math.min(n, inflight)) {
        sock.write(messages[sent++ % messages.length], "text");
      }
      await pump();
    };
    await send(Math.min(2000, count)); // warm-up
    const serverBefore = await server.stats();
    const clientBefore = cpuMs();
    const started = performance.now();
    await send(count);
    const elapsed = performance.now() - started;
    const clientCpu = cpuMs() - clientBefore;
    const serverAfter = await server.stats();
    await sock.close();
    await server.stop();
    // The wire size: the same sequence through the same codec settings.
    let wire = payloadBytes;
    if (compression !== false) {
      const { sender, receiver } = codecPair(compression);
      let total = 0;
      for (let i = 0; i < 2000; i++) {
        total += sender.compress(
          encoder.encode(messages[i % messages.length]),
        )!.length;
      }
      wire = total / 2000;
      sender.close();
      receiver.close();
    }
    console.log(
      `| ${name} | ${round(count / elapsed * 1000, 0)} | ${
        round(count * payloadBytes / elapsed / 1000, 1)
      } | ${round((serverAfter.cpuMs - serverBefore.cpuMs) * 1000 / count)} | ${
        round(clientCpu * 1000 / count)
      } | ${round(wire, 0)} |`,
    );
  }
}

// -------------------------------------------------------------- memory

const MEMORY_MODES: [string, false | CompressionOptions, boolean][] = [
  ["off", false, true],
  ["on, never used (idle since the handshake)", {}, false],
  ["on (context takeover both ways)", { threshold: 0 }, true],
  ["serverNoContextTakeover", {
    threshold: 0,
    serverNoContextTakeover: true,
  }, true],
  ["server and client no context takeover", {
    threshold: 0,
    serverNoContextTakeover: true,
    clientNoContextTakeover: true,
  }, true],
];

async function benchMemory(count: number): Promise<void> {
  console.log(
    `\n## memory: ${count} idle connections, server process RSS above the same server with none\n`,
  );
  console.log(
    "| compression | RSS per connection | V8 heap per connection |",
  );
  console.log("|---|---:|---:|");
  const message = jsonMessage(2048, 7);
  for (const [name, compression, exchange] of MEMORY_MODES) {
    const server = await ServerChild.start(compression);
    // Warm the server up with a few connections, so code and pools are in.
    const warm = await Promise.all(
      Array.from(
        { length: 20 },
        () => connect(`ws://127.0.0.1:${server.port}`, { compression }),
      ),
    );
    for (const sock of warm) {
      await sock.write(message, "text");
      await sock.read();
    }
    await Promise.all(warm.map((sock) => sock.close()));
    const before = await server.stats();
    const sockets: Socket[] = [];
    for (let i = 0; i < count; i += 100) {
      sockets.push(
        ...await Promise.all(
          Array.from(
            { length: Math.min(100, count - i) },
            () => connect(`ws://127.0.0.1:${server.port}`, { compression }),
          ),
        ),
      );
    }
    if (exchange) {
      for (let i = 0; i < sockets.length; i += 100) {
        await Promise.all(
          sockets.slice(i, i + 100).map(async (sock) => {
            await sock.write(message, "text");
            await sock.read();
          }),
        );
      }
    }
    const after = await server.stats();
    for (let i = 0; i < sockets.length; i += 100) {
      await Promise.all(sockets.slice(i, i + 100).map((sock) => sock.close()));
    }
    await server.stop();
    console.log(
      `| ${name} | ${round((after.rss - before.rss) / count / 1024)} KiB | ${
        round((after.heapUsed - before.heapUsed) / count / 1024)
      } KiB |`,
    );
  }
}

// -------------------------------------------------------------- main

if (Deno.args[0] === "--serve") {
  await runServer(Deno.args[1]);
} else {
  const options = flags(Deno.args);
  const parts = (options.parts ?? "codec,echo,memory").split(",");
  console.log(
    `# permessage-deflate, Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} CPUs`,
  );
  if (parts.includes("codec")) benchCodec();
  if (parts.includes("echo")) {
    await benchEcho(
      Number(options.messages ?? 20_000),
      Number(options.size ?? 2048),
      Number(options.inflight ?? 64),
    );
  }
  if (parts.includes("memory")) {
    await benchMemory(Number(options.connections ?? 1000));
  }
}
