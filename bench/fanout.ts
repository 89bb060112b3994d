/**
 * Fan-out benchmark: one server sends each message to every one of N
 * subscribers, three ways:
 *
 * - `seed loop`: what examples/broadcast_server.ts (the seed's 示例4) does,
 *   `await Promise.allSettled(clients.map((c) => c.write(msg, "text")))`
 *   for each message;
 * - `write loop`: the same `write()` per client, without awaiting, so the
 *   messages of a burst share each socket's flush like `publish` does;
 * - `publish`: `server.publish(topic, msg, "text")`, which encodes the
 *   frame once and queues the same bytes on every subscriber.
 *
 * The subscribers are raw TCP clients in a second process (so the server's
 * CPU time is its own); they count bytes and report when a burst has fully
 * arrived. Each round sends a burst of messages and waits for every byte
 * at every subscriber. Reported per message: wall time until all
 * subscribers had it, and the server process's CPU time.
 *
 * Run: deno run --allow-net --allow-run --allow-read --allow-env bench/fanout.ts
 * Flags: --subscribers 1000,10000  --rounds 20  --burst 10  --size 64
 *
 * @module
 */

import process from "node:process";
import { listen, type Socket } from "../mod.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function flags(args: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < args.length; i += 2) {
    if (!args[i].startsWith("--")) throw new TypeError(`Bad flag ${args[i]}`);
    out[args[i].slice(2)] = args[i + 1];
  }
  return out;
}

// -------------------------------------------------------------- clients

/** The subscriber process: N raw connections that count frame bytes. */
async function runClients(
  port: number,
  count: number,
  burstBytes: number,
): Promise<void> {
  const request = encoder.encode(
    `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
      "Sec-WebSocket-Version: 13\r\n\r\n",
  );
  let received = 0;
  let target = burstBytes * count;
  const onBytes = (n: number) => {
    received += n;
    while (received >= target) {
      console.log("burst");
      target += burstBytes * count;
    }
  };
  const open = async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    for (let off = 0; off < request.length;) {
      off += await conn.write(request.subarray(off));
    }
    const buffer = new Uint8Array(4096);
    let head = "";
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) throw new Error("Closed during the handshake");
      head += decoder.decode(buffer.subarray(0, n));
      const end = head.indexOf("\r\n\r\n");
      if (end !== -1) {
        // Frames that came with the head (none expected yet).
        onBytes(encoder.encode(head.slice(end + 4)).length);
        break;
      }
    }
    // Wrapped, or awaiting open() would wait for the whole read loop.
    return {
      loop: (async () => {
        try {
          for (;;) {
            const n = await conn.read(buffer);
            if (n === null) break;
            onBytes(n);
          }
        } catch {
          // Reset when the benchmark ends.
        }
      })(),
    };
  };
  const loops: Promise<void>[] = [];
  // Connect in batches so the listen queue never overflows.
  for (let i = 0; i < count; i += 500) {
    const batch = [];
    for (let j = i; j < Math.min(count, i + 500); j++) batch.push(open());
    for (const { loop } of await Promise.all(batch)) loops.push(loop);
  }
  console.log("ready");
  await Promise.all(loops);
}

// --------------------------------------------------------------- server

type Mode = "seed loop" | "write loop" | "publish";

interface Result {
  subscribers: number;
  mode: Mode;
  /** Median wall time per message, all subscribers served, in ms. */
  wall: number;
  /** Median server CPU time per message, in ms. */
  cpu: number;
}

/** Lines of a child's stdout, one at a time. */
class Lines {
  #reader: ReadableStreamDefaultReader<string>;
  #buffer = "";
  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  }
  async next(): Promise<string> {
    for (;;) {
      const nl = this.#buffer.indexOf("\n");
      if (nl !== -1) {
        const line = this.#buffer.slice(0, nl);
        this.#buffer = this.#buffer.slice(nl + 1);
        return line;
      }
      const { value, done } = await this.#reader.read();
      if (done) throw new Error("The subscriber process exited");
      this.#buffer += value;
    }
  }
  cancel(): Promise<void> {
    return this.#reader.cancel();
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function cpuMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

async function benchmark(
  count: number,
  rounds: number,
  burst: number,
  size: number,
): Promise<Result[]> {
  const clients = new Set<Socket>();
  const server = listen({
    addr: "127.0.0.1:0",
    backlog: 4096,
    async handler(sock) {
      sock.subscribe("bench");
      clients.add(sock);
      for await (const _ of sock) { /* only the close comes */ }
      clients.delete(sock);
    },
  });
  const message = "m".repeat(size);
  const frameBytes = size + (size < 126 ? 2 : size < 65536 ? 4 : 10);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      import.meta.filename!,
      "--role",
      "clients",
      "--port",
      String(server.addr.port),
      "--count",
      String(count),
      "--burst-bytes",
      String(frameBytes * burst),
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = new Lines(child.stdout);
  const results: Result[] = [];
  try {
    if (await lines.next() !== "ready") throw new Error("No ready line");
    while (server.subscriberCount("bench") < count) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const send: Record<Mode, () => Promise<void>> = {
      "seed loop": async () => {
        for (let i = 0; i < burst; i++) {
          const targets = [...clients];
          await Promise.allSettled(
            targets.map((client) => client.write(message, "text")),
          );
        }
      },
      "write loop": () => {
        for (let i = 0; i < burst; i++) {
          for (const client of clients) client.write(message, "text");
        }
        return Promise.resolve();
      },
      "publish": () => {
        for (let i = 0; i < burst; i++) {
          server.publish("bench", message, "text");
        }
        return Promise.resolve();
      },
    };
    const modes: Mode[] = ["seed loop", "write loop", "publish"];
    const walls: Record<string, number[]> = {};
    const cpus: Record<string, number[]> = {};
    // Interleaved, rotated order each round; the first 3 rounds warm up.
    for (let round = 0; round < rounds + 3; round++) {
      for (let k = 0; k < modes.length; k++) {
        const mode = modes[(round + k) % modes.length];
        const cpu0 = cpuMs();
        const t0 = performance.now();
        await send[mode]();
        if (await lines.next() !== "burst") throw new Error("Bad line");
        const wall = performance.now() - t0;
        const cpu = cpuMs() - cpu0;
        if (round < 3) continue;
        (walls[mode] ??= []).push(wall / burst);
        (cpus[mode] ??= []).push(cpu / burst);
      }
    }
    for (const mode of modes) {
      results.push({
        subscribers: count,
        mode,
        wall: median(walls[mode]),
        cpu: median(cpus[mode]),
      });
    }
  } finally {
    child.kill("SIGKILL");
    await child.status;
    await lines.cancel().catch(() => {});
    await server.close();
  }
  return results;
}

async function main(): Promise<void> {
  const f = flags(Deno.args);
  if (f.role === "clients") {
    await runClients(Number(f.port), Number(f.count), Number(f["burst-bytes"]));
    return;
  }
  const counts = (f.subscribers ?? "1000,10000").split(",").map(Number);
  const rounds = Number(f.rounds ?? 20);
  const burst = Number(f.burst ?? 10);
  const size = Number(f.size ?? 64);
  console.log(
    `Fan-out of ${size}-byte text messages, bursts of ${burst}, ${rounds} rounds (median per message)\n`,
  );
  console.log(
    "| subscribers | mode | wall ms/msg | server CPU ms/msg | deliveries/s | CPU vs publish |",
  );
  console.log("|---:|---|---:|---:|---:|---:|");
  for (const count of counts) {
    const results = await benchmark(count, rounds, burst, size);
    const publish = results.find((r) => r.mode === "publish")!;
    for (const r of results) {
      console.log(
        `| ${count} | ${r.mode} | ${r.wall.toFixed(2)} | ${
          r.cpu.toFixed(2)
        } | ${Math.round(count / (r.wall / 1000)).toLocaleString("en-US")} | ${
          (r.cpu / publish.cpu).toFixed(2)
        }x |`,
      );
    }
  }
}

await main();
