/**
 * Topics across processes through Redis (`deno task bench:cluster`).
 *
 * 1. Relay: one server process publishes, as fast as it can in bursts of
 *    `--burst` per event-loop turn, to a topic whose only subscriber is
 *    connected to another server process; messages per second from the
 *    first publish to the last arrival.
 * 2. Fan-out: 2 server processes × `--subscribers` subscribers on Redis,
 *    one publishing, against one process with the same subscribers and no
 *    broker. Deliveries per second and per server core-second (CPU time of
 *    the server processes, from `process.cpuUsage()`), p50/p99 latency from
 *    a timestamp in each payload, and redis-server's CPU (from /proc).
 *
 * The subscribers are raw TCP clients in processes of their own that parse
 * the frames. Needs `redis-server` on the PATH (Debian's).
 *
 * Run: deno run -A bench/cluster.ts [--subscribers 500] [--messages 2000]
 *      [--pause 10] [--relay 200000] [--burst 100]
 * (fan-out: bursts of 10 messages every `--pause` ms; relay: bursts of
 * `--burst` messages per turn).
 *
 * @module
 */

import { RedisServer } from "../tests/_redis_server.ts";
import process from "node:process";
import { setImmediate } from "node:timers";
import { listen, type Socket } from "../mod.ts";
import { redisBroker } from "../redis.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const self = new URL(import.meta.url).pathname;

function flags(args: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < args.length; i += 2) out[args[i].slice(2)] = args[i + 1];
  return out;
}

/** Wall-clock time in ms with sub-ms precision, comparable across processes. */
function now(): number {
  return performance.timeOrigin + performance.now();
}

// ---------------------------------------------------------------- server

/**
 * A server process: `/sub` sockets subscribe to `bench`; a `/ctl` socket
 * takes `publish COUNT BURST SIZE PAUSE`, `cpu` and `stats`.
 */
function runServer(redisUrl: string): void {
  const server = listen({
    addr: "127.0.0.1:0",
    broker: redisUrl === "none" ? undefined : redisBroker({ url: redisUrl }),
    // Latency is measured: a subscriber that falls behind should show it,
    // not be skipped.
    maxPublishBacklog: 64 * 1024 * 1024,
    async handler(sock: Socket) {
      if (sock.request.url.endsWith("/sub")) {
        sock.subscribe("bench");
        for await (const _ of sock) { /* nothing comes */ }
        return;
      }
      for await (const msg of sock) {
        if (msg.type !== "text") continue;
        const [command, ...args] = msg.data.split(" ");
        if (command === "publish") {
          const [count, burst, size, pause] = args.map(Number);
          const pad = "x".repeat(Math.max(0, size - 20));
          for (let i = 0; i < count;) {
            for (let j = 0; j < burst && i < count; j++, i++) {
              server.publish("bench", `${now().toFixed(3)} ${pad}`, "text");
            }
            if (pause > 0) await new Promise((r) => setTimeout(r, pause));
            else await new Promise((r) => setImmediate(r));
          }
          await sock.write("done", "text");
        } else if (command === "cpu") {
          const { user, system } = process.cpuUsage();
          await sock.write(String((user + system) / 1e6), "text");
        } else if (command === "stats") {
          await sock.write(JSON.stringify(server.brokerStats()), "text");
        }
      }
    },
  });
  console.log(`listening ${server.addr.port}`);
}

// --------------------------------------------------------------- clients

/**
 * A client process: `count` raw subscribers of `port`; prints `ready`, then
 * once no message came for a second (or all `expected` per connection
 * came), a JSON summary: messages, first and last arrival, latencies.
 */
async function runClients(
  port: number,
  count: number,
  expected: number,
): Promise<void> {
  const request = encoder.encode(
    `GET /sub HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
      "Sec-WebSocket-Version: 13\r\n\r\n",
  );
  let messages = 0;
  let first = 0;
  let last = 0;
  const latencies: number[] = [];
  let sampleEvery = 1;
  const conns: Deno.Conn[] = [];
  const read = async (conn: Deno.Conn, pending: Uint8Array) => {
    const buffer = new Uint8Array(256 * 1024);
    let rest: Uint8Array = pending;
    for (;;) {
      // Frames: text, unmasked, short (header 2 or 4 bytes).
      let offset = 0;
      while (rest.length - offset >= 2) {
        let length = rest[offset + 1] & 0x7f;
        let header = 2;
        if (length === 126) {
          if (rest.length - offset < 4) break;
          length = (rest[offset + 2] << 8) | rest[offset + 3];
          header = 4;
        }
        if (rest.length - offset < header + length) break;
        const t = now();
        if (messages === 0) first = t;
        last = t;
        if (messages++ % sampleEvery === 0) {
          const payload = rest.subarray(offset + header, offset + header + 24);
          const sent = Number(decoder.decode(payload).split(" ")[0]);
          latencies.push(t - sent);
        }
        offset += header + length;
      }
      rest = rest.subarray(offset);
      const n = await conn.read(buffer).catch(() => null);
      if (n === null) return;
      const next = new Uint8Array(rest.length + n);
      next.set(rest);
      next.set(buffer.subarray(0, n), rest.length);
      rest = next;
    }
  };
  sampleEvery = Math.max(1, Math.floor((count * expected) / 100_000));
  for (let i = 0; i < count; i++) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(request);
    let head = new Uint8Array(0);
    const buffer = new Uint8Array(4096);
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) throw new Error("Closed during the handshake");
      const next = new Uint8Array(head.length + n);
      next.set(head);
      next.set(buffer.subarray(0, n), head.length);
      head = next;
      const end = decoder.decode(head).indexOf("\r\n\r\n");
      if (end !== -1) {
        read(conn, head.subarray(end + 4));
        break;
      }
    }
    conns.push(conn);
  }
  console.log("ready");
  let seen = -1;
  for (;;) {
    await new Promise((r) => setTimeout(r, 1000));
    if (messages === seen || messages >= count * expected) break;
    seen = messages;
  }
  latencies.sort((a, b) => a - b);
  const pick = (q: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
  console.log(JSON.stringify({
    messages,
    first,
    last,
    p50: pick(0.5),
    p99: pick(0.99),
  }));
  for (const conn of conns) conn.close();
}

// ------------------------------------------------------------ the driver

interface Child {
  process: Deno.ChildProcess;
  line(match: RegExp): Promise<string>;
}

function spawn(args: string[]): Child {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", self, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines: string[] = [];
  const waker: { wake: (() => void) | null } = { wake: null };
  (async () => {
    let text = "";
    for await (
      const chunk of child.stdout.pipeThrough(new TextDecoderStream())
    ) {
      text += chunk;
      let end;
      while ((end = text.indexOf("\n")) >= 0) {
        lines.push(text.slice(0, end));
        text = text.slice(end + 1);
        waker.wake?.();
      }
    }
  })();
  return {
    process: child,
    async line(match: RegExp): Promise<string> {
      for (;;) {
        const index = lines.findIndex((l) => match.test(l));
        if (index >= 0) return lines.splice(index, 1)[0];
        await new Promise<void>((r) => waker.wake = r);
      }
    },
  };
}

async function startServer(redisUrl: string): Promise<[Child, number]> {
  const child = spawn(["--role", "server", "--redis", redisUrl]);
  const port = Number((await child.line(/^listening/)).split(" ")[1]);
  return [child, port];
}

async function control(port: number): Promise<WebSocket> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ctl`);
  await new Promise((r) => ws.onopen = r);
  return ws;
}

function ask(ws: WebSocket, command: string): Promise<string> {
  return new Promise((resolve) => {
    ws.onmessage = (event) => resolve(event.data);
    ws.send(command);
  });
}

function redisCpu(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime, fields 14 and 15 (1-based), in clock ticks (100/s).
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function stopAll(children: Child[]): Promise<void> {
  for (const child of children) {
    try {
      child.process.kill("SIGKILL");
    } catch {
      // Exited on its own (the clients do).
    }
    await child.process.status;
  }
}

async function relay(total: number, burst: number): Promise<number> {
  const redis = await RedisServer.start();
  const [pub, pubPort] = await startServer(redis.url);
  const [sub, subPort] = await startServer(redis.url);
  const clients = spawn([
    "--role",
    "clients",
    "--port",
    String(subPort),
    "--count",
    "1",
    "--expected",
    String(total),
  ]);
  await clients.line(/^ready/);
  await new Promise((r) => setTimeout(r, 300));
  const ctl = await control(pubPort);
  const start = now();
  await ask(ctl, `publish ${total} ${burst} 64 0`);
  const result = JSON.parse(await clients.line(/^\{/));
  const rate = result.messages / ((result.last - start) / 1000);
  console.log(
    `relay: ${result.messages} of ${total} messages (64 B, bursts of ${burst}) from one server through Redis to one subscriber on another: ${
      Math.round(rate)
    } messages/s`,
  );
  ctl.close();
  await stopAll([pub, sub, clients]);
  await redis.kill();
  return rate;
}

interface FanOut {
  deliveries: number;
  perSecond: number;
  perCoreSecond: number;
  p50: number;
  p99: number;
  redisCpu: number;
}

async function fanOut(
  nodes: number,
  subscribers: number,
  messages: number,
  pause: number,
): Promise<FanOut> {
  const redis = nodes > 1 ? await RedisServer.start() : null;
  const servers: [Child, number][] = [];
  for (let i = 0; i < nodes; i++) {
    servers.push(await startServer(redis?.url ?? "none"));
  }
  const clients = servers.map(([, port]) =>
    spawn([
      "--role",
      "clients",
      "--port",
      String(port),
      "--count",
      String(subscribers),
      "--expected",
      String(messages),
    ])
  );
  for (const c of clients) await c.line(/^ready/);
  await new Promise((r) => setTimeout(r, 500));
  const ctls = await Promise.all(servers.map(([, port]) => control(port)));
  const cpuBefore = await Promise.all(
    ctls.map((c) => ask(c, "cpu").then(Number)),
  );
  const redisBefore = redis ? redisCpu(redis.pid!) : 0;
  const start = now();
  // Bursts of 10 every `pause` ms: a steady stream the subscribers' process
  // keeps up with, so latency is the path's, not a queue's.
  await ask(ctls[0], `publish ${messages} 10 64 ${pause}`);
  const results = await Promise.all(
    clients.map((c) => c.line(/^\{/).then(JSON.parse)),
  );
  const cpuAfter = await Promise.all(
    ctls.map((c) => ask(c, "cpu").then(Number)),
  );
  const redisUsed = redis ? redisCpu(redis.pid!) - redisBefore : 0;
  const deliveries = results.reduce((n, r) => n + r.messages, 0);
  const end = Math.max(...results.map((r) => r.last));
  // The clients wait a second of silence before they report: CPU measured
  // after includes that idle second (negligible for a server with no work).
  const cpu = cpuAfter.reduce((n, c, i) => n + c - cpuBefore[i], 0);
  const outcome = {
    deliveries,
    perSecond: deliveries / ((end - start) / 1000),
    perCoreSecond: deliveries / cpu,
    p50: Math.max(...results.map((r) => r.p50)),
    p99: Math.max(...results.map((r) => r.p99)),
    redisCpu: redisUsed,
  };
  console.log(
    `${nodes} server process${
      nodes > 1 ? "es via Redis" : ", no broker"
    } × ${subscribers} subscribers, ${messages} messages: ${deliveries} of ${
      nodes * subscribers * messages
    } deliveries, ${Math.round(outcome.perSecond)}/s, ${
      Math.round(outcome.perCoreSecond)
    } per server core-second (${cpu.toFixed(2)} s CPU), latency p50 ${
      outcome.p50.toFixed(2)
    } ms p99 ${outcome.p99.toFixed(2)} ms${
      redis ? `, redis-server CPU ${redisUsed.toFixed(2)} s` : ""
    }`,
  );
  for (const c of ctls) c.close();
  await stopAll([...servers.map(([c]) => c), ...clients]);
  await redis?.kill();
  return outcome;
}

async function main(): Promise<void> {
  const options = flags(Deno.args);
  if (options.role === "server") return runServer(options.redis);
  if (options.role === "clients") {
    return await runClients(
      Number(options.port),
      Number(options.count),
      Number(options.expected),
    );
  }
  const subscribers = Number(options.subscribers ?? 500);
  const messages = Number(options.messages ?? 2000);
  const relayed = Number(options.relay ?? 200_000);
  const burst = Number(options.burst ?? 100);
  const rate = await relay(relayed, burst);
  console.log(
    `  against the naive relay's 44.7k messages/s: ${
      (rate / 44_700).toFixed(2)
    }x (target 2x)`,
  );
  const pause = Number(options.pause ?? 10);
  const local = await fanOut(1, subscribers, messages, pause);
  const cluster = await fanOut(2, subscribers, messages, pause);
  console.log(
    `  deliveries per server core-second, 2 processes via Redis against 1 process: ${
      (cluster.perCoreSecond / local.perCoreSecond).toFixed(2)
    }x (target 0.5x)`,
  );
}

await main();
