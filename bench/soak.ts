/**
 * Load, soak and flood (`deno task soak`; not part of `deno task test`).
 *
 * Soak (default): starts an echo server in a child process and `--conns`
 * client connections from `--procs` client processes (all with this
 * library), holds them all, has each send a `--size`-byte text message
 * every `--interval` ms and wait for its echo for `--duration` seconds,
 * then closes them all with a close handshake; `--rounds N` does that N
 * times against the same server (memory that is retained but reused shows
 * as a flat "after" across rounds; a leak grows). Reports connections
 * held (as the server counts them), messages, errors, round-trip latency,
 * and the server's RSS (`/proc/<pid>/status` VmRSS), V8 heap and open
 * descriptors: before, peak, after everyone disconnected, after a forced
 * GC.
 *
 * Flood (`--flood`): one raw peer floods `--mb` MiB of `--message`-byte
 * binary messages, as fast as TCP takes them, at a handler that reads one
 * message every `--read-delay` ms; reports the server's RSS before, peak
 * and after, which read backpressure (`maxQueuedBytes`) must keep near the
 * baseline rather than near the flood's size.
 *
 * Stream (`--stream`): one client sends a single message of `--mb` MiB
 * (default 1024) in 1 MiB pieces with `write(stream)`; the server reads it
 * with `readStream()` and a BYOB reader into one 64 KiB buffer; reports
 * the server's RSS before and its peak, which must stay far below the
 * message's size (issue 16).
 *
 * Descriptors: every child runs under `bash -c 'ulimit -n 65536 || ulimit
 * -n <hard limit>'`; where the hard limit is lower (20000 in some
 * containers) a process holds at most that many sockets, which is why the
 * client connections are spread over several processes.
 *
 * Usage (`-A`: Deno reads /proc only with all permissions):
 *   deno run -A bench/soak.ts --conns 10000 --duration 30 [--rounds 2] [--interval 1000] [--size 64]
 *   deno run -A bench/soak.ts --flood --mb 100
 *   deno run -A bench/soak.ts --stream [--mb 1024]
 *
 * Prints progress, then `RESULT <json>`.
 *
 * @module
 */

import { connect, listen, type Socket } from "../mod.ts";
import {
  maskedFrame,
  num as numFlag,
  parseFlags,
  sleep,
  writeAll,
} from "./_common.ts";

// -- Flags --

const flags = parseFlags(Deno.args);
const num = (name: string, fallback: number) => numFlag(flags, name, fallback);
const MIB = 1024 * 1024;
const encoder = new TextEncoder();

function print(tag: string, value: unknown): void {
  console.log(`${tag} ${JSON.stringify(value)}`);
}

/** Lines of stdin, for commands from the orchestrator. */
async function* stdinLines(): AsyncGenerator<string> {
  let rest = "";
  for await (
    const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())
  ) {
    rest += chunk;
    let nl;
    while ((nl = rest.indexOf("\n")) !== -1) {
      yield rest.slice(0, nl);
      rest = rest.slice(nl + 1);
    }
  }
}

/** Max open files of this process, from /proc/self/limits. */
function openFilesLimit(): number {
  try {
    const limits = Deno.readTextFileSync("/proc/self/limits");
    const line = limits.split("\n").find((l) => l.startsWith("Max open files"));
    return Number(line?.split(/\s+/)[3] ?? NaN);
  } catch {
    return NaN;
  }
}

// -- Role: server (child) --

/** The V8 heap and external (ArrayBuffer) memory, in MiB. */
function heap(): {
  heapUsedMiB: number;
  heapTotalMiB: number;
  externalMiB: number;
} {
  const m = Deno.memoryUsage();
  return {
    heapUsedMiB: Math.round(m.heapUsed / MIB * 10) / 10,
    heapTotalMiB: Math.round(m.heapTotal / MIB * 10) / 10,
    externalMiB: Math.round(m.external / MIB * 10) / 10,
  };
}

async function serverRole(): Promise<void> {
  const mode = flags.mode ?? "echo";
  const readDelay = num("read-delay", 2);
  let received = 0;
  let messages = 0;
  let handlerErrors = 0;
  const server = listen({
    addr: "127.0.0.1:0",
    backlog: 4096,
    async handler(sock) {
      if (mode === "stream") {
        let buffer = new ArrayBuffer(64 * 1024);
        for (;;) {
          const msg = await sock.readStream();
          if (msg === null) return;
          if (msg.type !== "binary") continue;
          const reader = msg.stream.getReader({ mode: "byob" });
          for (;;) {
            const { done, value } = await reader.read(new Uint8Array(buffer));
            if (done) break;
            received += value.byteLength;
            buffer = value.buffer as ArrayBuffer;
          }
          messages++;
        }
      }
      if (mode === "flood") {
        // A slow reader: one message, then a pause.
        for await (const msg of sock) {
          if (msg.type === "binary") {
            received += msg.data.length;
            messages++;
            await sleep(readDelay);
          }
        }
        return;
      }
      for await (const msg of sock) {
        if (msg.type === "text") {
          messages++;
          await sock.write(msg.data, "text");
        }
      }
    },
    onError: () => handlerErrors++,
  });
  print("READY", {
    port: server.addr.port,
    pid: Deno.pid,
    openFiles: openFilesLimit(),
  });
  for await (const line of stdinLines()) {
    if (line === "stats") {
      print("STATS", {
        connections: server.connections,
        received,
        messages,
        handlerErrors,
        ...heap(),
      });
    } else if (line === "gc") {
      const gc = (globalThis as { gc?: () => void }).gc;
      gc?.();
      await sleep(200);
      gc?.();
      print("GC", { available: gc !== undefined, ...heap() });
    } else if (line === "quit") break;
  }
  await server.close();
  print("BYE", {});
}

// -- Role: clients (child) --

async function clientsRole(): Promise<void> {
  const port = num("port", 0);
  const conns = num("conns", 100);
  const duration = num("duration", 10) * 1000;
  const interval = num("interval", 1000);
  const size = num("size", 64);
  const concurrency = num("connect-concurrency", 200);
  const url = `ws://127.0.0.1:${port}/`;
  const payload = "x".repeat(size);

  const socks: Socket[] = [];
  let connectErrors = 0;
  let firstError = "";
  let started = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (started < conns) {
      started++;
      try {
        socks.push(await connect(url, { handshakeTimeout: 60_000 }));
      } catch (error) {
        connectErrors++;
        firstError ||= String(error);
      }
    }
  }));
  print("CONNECTED", {
    held: socks.length,
    connectErrors,
    firstError,
    ms: Math.round(performance.now() - t0),
    openFiles: openFilesLimit(),
  });

  const lines = stdinLines();
  while ((await lines.next()).value !== "go") { /* wait */ }

  let sent = 0;
  let echoed = 0;
  let errors = 0;
  let lost = 0;
  const rtts: number[] = [];
  const end = performance.now() + duration;
  await Promise.all(socks.map(async (sock) => {
    await sleep(Math.random() * interval); // Spread the load.
    while (performance.now() < end) {
      const start = performance.now();
      try {
        sent++;
        await sock.write(payload, "text");
        const reply = await sock.read();
        if (reply?.type === "text" && reply.data === payload) {
          echoed++;
          rtts.push(performance.now() - start);
        } else {
          errors++;
          firstError ||= `unexpected reply ${JSON.stringify(reply)}`;
          if (reply === null || reply.type === "close") {
            lost++;
            return;
          }
        }
      } catch (error) {
        errors++;
        firstError ||= String(error);
        return;
      }
      await sleep(interval);
    }
  }));

  let clean = 0;
  let closeErrors = 0;
  await Promise.all(socks.map(async (sock) => {
    try {
      await sock.close();
      const info = await sock.closed;
      if (info.wasClean && info.code === 1000) clean++;
      else closeErrors++;
    } catch {
      closeErrors++;
    }
  }));
  rtts.sort((a, b) => a - b);
  const pct = (p: number) =>
    rtts.length === 0 ? 0 : Math.round(
      rtts[Math.min(rtts.length - 1, Math.floor(rtts.length * p))] * 10,
    ) / 10;
  print("DONE", {
    sent,
    echoed,
    errors,
    lost,
    clean,
    closeErrors,
    firstError,
    rttMs: { p50: pct(0.5), p99: pct(0.99), max: pct(1) },
  });
}

// -- Orchestrator --

/** A child process speaking in `TAG {json}` lines. */
class Child {
  readonly process: Deno.ChildProcess;
  readonly name: string;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #lines: string[] = [];
  #waiters: (() => void)[] = [];
  #ended = false;

  constructor(name: string, denoFlags: string[], args: string[]) {
    this.name = name;
    // Raise the descriptor limit as far as allowed, then become Deno.
    this.process = new Deno.Command("bash", {
      args: [
        "-c",
        'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"',
        "bash",
        Deno.execPath(),
        "run",
        ...denoFlags,
        new URL(import.meta.url).pathname,
        ...args,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#writer = this.process.stdin.getWriter();
    this.#read();
  }

  async #read(): Promise<void> {
    let rest = "";
    for await (
      const chunk of this.process.stdout.pipeThrough(new TextDecoderStream())
    ) {
      rest += chunk;
      let nl;
      while ((nl = rest.indexOf("\n")) !== -1) {
        const line = rest.slice(0, nl);
        rest = rest.slice(nl + 1);
        if (/^[A-Z]+ /.test(line)) this.#lines.push(line);
        else console.log(`[${this.name}] ${line}`);
        for (const wake of this.#waiters.splice(0)) wake();
      }
    }
    this.#ended = true;
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /** The next `TAG {json}` line with this tag. */
  async expect<T>(tag: string, timeoutMs = 600_000): Promise<T> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const index = this.#lines.findIndex((l) => l.startsWith(tag + " "));
      if (index !== -1) {
        const [line] = this.#lines.splice(index, 1);
        return JSON.parse(line.slice(tag.length + 1)) as T;
      }
      if (this.#ended) throw new Error(`${this.name} exited before ${tag}`);
      if (performance.now() > deadline) {
        throw new Error(`${this.name}: no ${tag} within ${timeoutMs} ms`);
      }
      await Promise.race([
        new Promise<void>((resolve) => this.#waiters.push(resolve)),
        sleep(1000),
      ]);
    }
  }

  async send(line: string): Promise<void> {
    await this.#writer.write(encoder.encode(line + "\n"));
  }

  async close(): Promise<Deno.CommandStatus> {
    try {
      await this.#writer.close();
    } catch {
      // Already closed.
    }
    return await this.process.status;
  }
}

/** Resident set size and its high-water mark of `pid`, in bytes. */
function memoryOf(pid: number): { rss: number; hwm: number } {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kb = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0) *
    1024;
  return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
}

/**
 * Where `pid`'s resident memory is (from /proc/<pid>/smaps), grouped by
 * mapping name and mapped size: `[heap]` is the native allocator's main
 * arena, many same-sized anonymous mappings are V8 pages or thread arenas.
 */
function topMappings(pid: number, count = 6): string[] {
  const groups = new Map<string, { rss: number; n: number }>();
  let current = "";
  let total = 0;
  for (const line of Deno.readTextFileSync(`/proc/${pid}/smaps`).split("\n")) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) {
      const fields = line.split(/\s+/);
      const [lo, hi] = fields[0].split("-").map((h) => parseInt(h, 16));
      const name = fields[5] || "[anon]";
      const size = hi - lo;
      current = `${name} of ${
        size >= MIB ? `${mib(size)} MiB` : `${size / 1024} KiB`
      }`;
    } else if (line.startsWith("Rss:")) {
      const rss = Number(line.split(/\s+/)[1]) * 1024;
      total += rss;
      const group = groups.get(current) ?? { rss: 0, n: 0 };
      group.rss += rss;
      group.n++;
      groups.set(current, group);
    }
  }
  return [
    `total ${mib(total)} MiB resident`,
    ...[...groups].sort((a, b) => b[1].rss - a[1].rss).slice(0, count).map((
      [name, g],
    ) => `${mib(g.rss)} MiB in ${g.n} × ${name}`),
  ];
}

/** How many descriptors `pid` has open. */
function openFdsOf(pid: number): number {
  let n = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
  return n;
}

/** Samples a process's RSS and descriptors until stopped. */
class Sampler {
  peakRss = 0;
  peakFds = 0;
  #timer: ReturnType<typeof setInterval>;
  constructor(pid: number, everyMs: number) {
    const sample = () => {
      try {
        this.peakRss = Math.max(this.peakRss, memoryOf(pid).rss);
        this.peakFds = Math.max(this.peakFds, openFdsOf(pid));
      } catch {
        // The process is gone.
      }
    };
    sample();
    this.#timer = setInterval(sample, everyMs);
  }
  stop(): void {
    clearInterval(this.#timer);
  }
}

const mib = (bytes: number) => Math.round(bytes / MIB * 10) / 10;

interface Heap {
  heapUsedMiB: number;
  heapTotalMiB: number;
  externalMiB: number;
}

interface ServerStats extends Heap {
  connections: number;
  received: number;
  messages: number;
  handlerErrors: number;
}

async function startServer(mode: string): Promise<
  { server: Child; pid: number; port: number; openFiles: number }
> {
  const server = new Child("server", ["-A", "--v8-flags=--expose-gc"], [
    "--role=server",
    `--mode=${mode}`,
    `--read-delay=${num("read-delay", 2)}`,
  ]);
  const ready = await server.expect<
    { port: number; pid: number; openFiles: number }
  >("READY", 30_000);
  return { server, ...ready };
}

async function stats(server: Child): Promise<ServerStats> {
  await server.send("stats");
  return await server.expect<ServerStats>("STATS", 30_000);
}

/** Forces a GC in the server; its RSS and heap afterwards. */
async function settle(server: Child, pid: number) {
  await server.send("gc");
  const heap = await server.expect<Heap>("GC", 30_000);
  await sleep(1000);
  return { ...memoryOf(pid), heap };
}

interface Connected {
  held: number;
  connectErrors: number;
  firstError: string;
  ms: number;
  openFiles: number;
}

interface Done {
  sent: number;
  echoed: number;
  errors: number;
  lost: number;
  clean: number;
  closeErrors: number;
  firstError: string;
  rttMs: { p50: number; p99: number; max: number };
}

/**
 * One round: `conns` clients connect, exchange for `duration` s and leave.
 * Returns what they and the server saw.
 */
async function round(
  index: number,
  server: Child,
  pid: number,
  port: number,
  sampler: Sampler,
): Promise<Record<string, unknown>> {
  const conns = num("conns", 10_000);
  const duration = num("duration", 30);
  const procs = num("procs", Math.max(1, Math.ceil(conns / 8000)));
  sampler.peakRss = 0;
  sampler.peakFds = 0;
  const t0 = performance.now();
  const clients: Child[] = [];
  for (let i = 0; i < procs; i++) {
    const share = Math.floor(conns / procs) + (i < conns % procs ? 1 : 0);
    clients.push(
      new Child(`clients-${i}`, ["-A"], [
        "--role=clients",
        `--port=${port}`,
        `--conns=${share}`,
        `--duration=${duration}`,
        `--interval=${num("interval", 1000)}`,
        `--size=${num("size", 64)}`,
      ]),
    );
  }
  const connected = await Promise.all(
    clients.map((c) => c.expect<Connected>("CONNECTED")),
  );
  const connectMs = Math.round(performance.now() - t0);
  const heldStats = await stats(server);
  const held = heldStats.connections;
  const atHold = memoryOf(pid);
  console.log(
    `round ${index}: server holds ${held} of ${conns} after ${connectMs} ms; RSS ${
      mib(atHold.rss)
    } MiB; client max open files ${connected.map((c) => c.openFiles)}`,
  );
  const messagesBefore = heldStats.messages;
  for (const c of clients) await c.send("go");
  const heldSamples: number[] = [];
  const exchangeStart = performance.now();
  while (performance.now() - exchangeStart < duration * 1000) {
    await sleep(Math.min(5000, duration * 1000));
    const s = await stats(server);
    heldSamples.push(s.connections);
    console.log(
      `  t+${
        Math.round((performance.now() - exchangeStart) / 1000)
      } s: ${s.connections} connections, ${
        s.messages - messagesBefore
      } messages echoed, RSS ${
        mib(memoryOf(pid).rss)
      } MiB, heap ${s.heapUsedMiB} MiB, external ${s.externalMiB} MiB`,
    );
  }
  const done = await Promise.all(clients.map((c) => c.expect<Done>("DONE")));
  for (const c of clients) await c.close();
  // Everyone said goodbye: the server must let go of all of it.
  const drainStart = performance.now();
  let left = (await stats(server)).connections;
  while (left > 0 && performance.now() - drainStart < 30_000) {
    await sleep(200);
    left = (await stats(server)).connections;
  }
  await sleep(2000);
  const after = memoryOf(pid);
  const fdsAfter = openFdsOf(pid);
  const afterGc = await settle(server, pid);
  const final = await stats(server);
  const sum = (key: keyof Done) =>
    done.reduce((n, d) => n + (d[key] as number), 0);
  const result = {
    round: index,
    connectMs,
    held,
    heldMin: Math.min(held, ...heldSamples),
    connectErrors: connected.reduce((n, c) => n + c.connectErrors, 0),
    messages: { sent: sum("sent"), echoed: sum("echoed") },
    serverMessages: final.messages - messagesBefore,
    errors: sum("errors"),
    lost: sum("lost"),
    closes: { clean: sum("clean"), errors: sum("closeErrors") },
    handlerErrors: final.handlerErrors,
    rttMs: done.map((d) => d.rttMs),
    firstErrors: [...connected, ...done].map((d) => d.firstError).filter(
      Boolean,
    ),
    serverRssMiB: {
      held: mib(atHold.rss),
      peak: mib(sampler.peakRss),
      afterDisconnect: mib(after.rss),
      afterGc: mib(afterGc.rss),
    },
    serverHeapMiB: {
      held: {
        heapUsedMiB: heldStats.heapUsedMiB,
        externalMiB: heldStats.externalMiB,
      },
      afterGc: afterGc.heap,
    },
    serverFds: { peak: sampler.peakFds, after: fdsAfter },
    connectionsLeft: left,
    serverMappingsAfterGc: topMappings(pid),
  };
  console.log(
    `round ${index}: ${result.messages.echoed} messages, ${result.errors} errors; RSS peak ${result.serverRssMiB.peak} MiB, after ${result.serverRssMiB.afterDisconnect} MiB, after GC ${result.serverRssMiB.afterGc} MiB; ${left} connections and ${fdsAfter} descriptors left`,
  );
  return result;
}

async function soak(): Promise<void> {
  const rounds = num("rounds", 1);
  const { server, pid, port, openFiles } = await startServer("echo");
  console.log(
    `server pid ${pid} on port ${port} (max open files ${openFiles})`,
  );
  await sleep(1000);
  const before = await settle(server, pid);
  const fdsBefore = openFdsOf(pid);
  console.log(
    `baseline: RSS ${mib(before.rss)} MiB, ${fdsBefore} descriptors`,
  );
  const sampler = new Sampler(pid, 250);
  const results = [];
  for (let i = 1; i <= rounds; i++) {
    results.push(await round(i, server, pid, port, sampler));
  }
  sampler.stop();
  const hwm = memoryOf(pid).hwm;
  await server.send("quit");
  await server.expect("BYE");
  const status = await server.close();
  const result = {
    mode: "soak",
    conns: num("conns", 10_000),
    procs: num("procs", Math.max(1, Math.ceil(num("conns", 10_000) / 8000))),
    durationS: num("duration", 30),
    intervalMs: num("interval", 1000),
    size: num("size", 64),
    serverBefore: {
      rssMiB: mib(before.rss),
      heap: before.heap,
      fds: fdsBefore,
    },
    serverPeakRssMiB: mib(hwm),
    rounds: results,
    serverExit: status.code,
  };
  console.log(`RESULT ${JSON.stringify(result, null, 2)}`);
}

async function flood(): Promise<void> {
  const total = num("mb", 100) * MIB;
  const size = num("message", 64 * 1024);
  const { server, pid, port } = await startServer("flood");
  await sleep(1000);
  const before = await settle(server, pid);
  console.log(`server pid ${pid}: baseline RSS ${mib(before.rss)} MiB`);

  // A raw peer: its own upgrade, then precomputed frames as fast as TCP
  // takes them (the library's client would be just as fast; raw keeps the
  // flood independent of it).
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(
    conn,
    encoder.encode(
      `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    ),
  );
  const buffer = new Uint8Array(64 * 1024);
  let head = "";
  while (!head.includes("\r\n\r\n")) {
    const n = await conn.read(buffer);
    if (n === null) throw new Error("The server closed during the upgrade");
    head += new TextDecoder().decode(buffer.subarray(0, n));
  }
  if (!head.startsWith("HTTP/1.1 101")) throw new Error(head);

  const frame = maskedFrame(true, 0x2, new Uint8Array(size).fill(0x5a));
  // Batch frames per write: fewer system calls, same bytes.
  const batch = new Uint8Array(
    frame.length * Math.max(1, Math.floor(MIB / frame.length)),
  );
  for (let o = 0; o + frame.length <= batch.length; o += frame.length) {
    batch.set(frame, o);
  }
  const perBatch = Math.floor(batch.length / frame.length);
  const sampler = new Sampler(pid, 50);
  const t0 = performance.now();
  let sentMessages = 0;
  const totalMessages = Math.ceil(total / size);
  while (sentMessages < totalMessages) {
    const n = Math.min(perBatch, totalMessages - sentMessages);
    await writeAll(conn, batch.subarray(0, n * frame.length));
    sentMessages += n;
  }
  const handedMs = performance.now() - t0;
  // The close frame, then wait for the server's (it comes once the slow
  // handler has read everything before it).
  await writeAll(conn, maskedFrame(true, 0x8, new Uint8Array([0x03, 0xe8])));
  let closeReply = -1;
  let pendingBytes = new Uint8Array(0);
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) break;
    const merged = new Uint8Array(pendingBytes.length + n);
    merged.set(pendingBytes);
    merged.set(buffer.subarray(0, n), pendingBytes.length);
    pendingBytes = merged;
    if (pendingBytes.length >= 4 && (pendingBytes[0] & 0x0f) === 0x8) {
      closeReply = (pendingBytes[2] << 8) | pendingBytes[3];
    }
  }
  conn.close();
  const doneMs = performance.now() - t0;
  // The close handshake ends while the slow handler still has the last
  // queued messages to read: let it finish before asking for its count.
  let s = await stats(server);
  for (let i = 0; i < 100 && s.received < sentMessages * size; i++) {
    await sleep(100);
    s = await stats(server);
  }
  sampler.stop();
  const after = memoryOf(pid);
  const afterGc = await settle(server, pid);
  await server.send("quit");
  await server.expect("BYE");
  await server.close();
  const result = {
    mode: "flood",
    floodMiB: mib(sentMessages * size),
    messageBytes: size,
    readDelayMs: num("read-delay", 2),
    handedToTcpS: Math.round(handedMs / 100) / 10,
    totalS: Math.round(doneMs / 100) / 10,
    serverReceivedMiB: mib(s.received),
    serverMessages: s.messages,
    closeReply,
    serverRssMiB: {
      before: mib(before.rss),
      peak: mib(Math.max(sampler.peakRss, after.hwm)),
      peakOverBaseline: mib(Math.max(sampler.peakRss, after.hwm) - before.rss),
      after: mib(after.rss),
      afterGc: mib(afterGc.rss),
    },
    serverHeapMiB: { before: before.heap, afterGc: afterGc.heap },
  };
  console.log(`RESULT ${JSON.stringify(result, null, 2)}`);
}

async function streamed(): Promise<void> {
  const total = num("mb", 1024) * MIB;
  const { server, pid, port } = await startServer("stream");
  await sleep(1000);
  const before = await settle(server, pid);
  console.log(`server pid ${pid}: baseline RSS ${mib(before.rss)} MiB`);
  const sock = await connect(`ws://127.0.0.1:${port}`);
  const piece = new Uint8Array(MIB).fill(0x5a);
  const sampler = new Sampler(pid, 50);
  const t0 = performance.now();
  await sock.write((async function* () {
    for (let sent = 0; sent < total; sent += piece.length) yield piece;
  })());
  let s = await stats(server);
  for (let i = 0; i < 600 && s.messages < 1; i++) {
    await sleep(100);
    s = await stats(server);
  }
  const ms = performance.now() - t0;
  sampler.stop();
  const after = memoryOf(pid);
  await sock.close();
  await server.send("quit");
  await server.expect("BYE");
  await server.close();
  const peak = Math.max(sampler.peakRss, after.hwm);
  const result = {
    mode: "stream",
    messageMiB: mib(total),
    serverReceivedMiB: mib(s.received),
    passed: s.received === total && s.messages === 1,
    seconds: Math.round(ms / 100) / 10,
    mbPerS: Math.round(total / 1e6 / (ms / 1000)),
    serverRssMiB: {
      before: mib(before.rss),
      peak: mib(peak),
      peakOverBaseline: mib(peak - before.rss),
    },
  };
  console.log(`RESULT ${JSON.stringify(result, null, 2)}`);
  if (!result.passed) Deno.exit(1);
}

// -- Entry --

if (import.meta.main) {
  const role = flags.role;
  if (role === "server") await serverRole();
  else if (role === "clients") await clientsRole();
  else if (flags.flood === "true") await flood();
  else if (flags.stream === "true") await streamed();
  else await soak();
  Deno.exit(0);
}
