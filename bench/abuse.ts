/**
 * Abuse suite (`deno task abuse`): what hostile peers cost us.
 *
 * Each attack runs against the library's server (`bench/abuse/server.ts`)
 * or client (`bench/abuse/client.ts`, connected to a raw server run here),
 * each in its own process, with default options unless the attack says
 * otherwise. The attacked process's RSS (`/proc/<pid>/status` VmRSS) is read
 * after a warm-up and a forced GC (the baseline), sampled every 50 ms
 * during the attack (and VmHWM at its end), and read again after it. One
 * row per figure: the attack, the side, the figure, the bound, PASS/FAIL.
 * Everything stays on 127.0.0.1; every loop has a count and a deadline.
 *
 * Usage:
 *   deno run -A bench/abuse.ts [--only ping-flood,garbage,...] [--scale F] [--json FILE]
 *     [--server builtin|bare|bare_keep] (storm and half-frame rounds against a reference;
 *       for idle, a comma list of the rows to run: ours,builtin,bun,bare,bare_noread;
 *       for tls-silent, `bare`: a bare Deno.listenTls server, the runtime's floor)
 *     [--server-v8-flags F] (more V8 flags for the attacked server)
 *
 * Attacks (names for `--only`): ping-flood, garbage, tls-silent, idle,
 * storm, half-frame, utf8, deflate-bfinal, slowloris, announce.
 * Progress goes to stderr, the markdown table to stdout; the exit code is 1
 * if a bound failed (or an attack could not run).
 *
 * @module
 */

import { constants as zlib, deflateRawSync, inflateRawSync } from "node:zlib";
import { connect } from "../mod.ts";
import { num, parseFlags, sleep } from "./_common.ts";
import {
  acceptUpgrade,
  BINARY,
  CLOSE,
  closeQuietly,
  frame,
  orTimeout,
  PING,
  Reader,
  TEXT,
  upgrade,
  upgradeRequest,
  writeAll,
} from "./abuse/raw.ts";

const MIB = 1024 * 1024;
const ROOT = new URL("../", import.meta.url);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

const flags = parseFlags(Deno.args);
const SCALE = num(flags, "scale", 1);
const ONLY = flags.only?.split(",").map((s) => s.trim()).filter(Boolean);
const scaled = (n: number) => Math.max(1, Math.round(n * SCALE));

function log(text: string): void {
  console.error(`[abuse] ${text}`);
}

// -- Results --

/** One figure of one attack. */
interface Row {
  attack: string;
  side: "server" | "client";
  figure: string;
  /** The measured value, as shown. */
  value: string;
  /** The bound, as shown; `—` for reference rows. */
  bound: string;
  /** `null`: a reference row without a bound. */
  pass: boolean | null;
  /** Measurements behind the figure. */
  details?: Record<string, unknown>;
}

const rows: Row[] = [];

function row(r: Row): void {
  rows.push(r);
  const verdict = r.pass === null ? "ref" : r.pass ? "PASS" : "FAIL";
  log(`${r.attack} (${r.side}): ${r.figure} = ${r.value} [${verdict}]`);
}

const mib = (bytes: number) => `${(bytes / MIB).toFixed(1)} MiB`;
const signedMib = (bytes: number) =>
  `${bytes >= 0 ? "+" : "−"}${(Math.abs(bytes) / MIB).toFixed(1)} MiB`;

// -- Processes --

const live = new Set<Fixture>();
/** This script run again under a raised ulimit, if it was. */
let reexecuted: Deno.ChildProcess | undefined;

function killAll(): void {
  for (const child of live) child.kill();
  try {
    reexecuted?.kill("SIGTERM");
  } catch {
    // Already gone.
  }
}

for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  Deno.addSignalListener(signal, () => {
    killAll();
    Deno.exit(130);
  });
}
globalThis.addEventListener("unload", killAll);

/** The descriptor limits of this process, from /proc/self/limits. */
function openFilesLimits(): { soft: number; hard: number } {
  const limits = Deno.readTextFileSync("/proc/self/limits");
  const line = limits.split("\n").find((l) => l.startsWith("Max open files"));
  const fields = line?.split(/\s+/) ?? [];
  const parse = (s: string | undefined) =>
    s === "unlimited" ? Infinity : Number(s);
  return { soft: parse(fields[3]), hard: parse(fields[4]) };
}

/** Raises the soft descriptor limit as far as allowed, then runs `cmd`. */
function withUlimit(cmd: string[]): string[] {
  return [
    "sh",
    "-c",
    'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"',
    "sh",
    ...cmd,
  ];
}

/**
 * A child process: `exec`ed by `sh` after its ulimit, so its pid is the
 * attacked process's. Collects `TAG {json}` lines and the last of stderr.
 */
class Fixture {
  readonly name: string;
  readonly child: Deno.ChildProcess;
  readonly pid: number;
  readonly exited: Promise<Deno.CommandStatus>;
  stderr = "";
  #lines: string[] = [];
  #waiters: (() => void)[] = [];
  #ended = false;
  #writer: WritableStreamDefaultWriter<Uint8Array>;

  constructor(name: string, cmd: string[], env: Record<string, string> = {}) {
    this.name = name;
    const [exe, ...args] = withUlimit(cmd);
    this.child = new Deno.Command(exe, {
      args,
      cwd: ROOT,
      env: { NO_COLOR: "1", ...env },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    live.add(this);
    this.pid = this.child.pid;
    this.#writer = this.child.stdin.getWriter();
    this.exited = this.child.status.finally(() => live.delete(this));
    this.#pump();
    this.#pumpStderr();
  }

  async #pump(): Promise<void> {
    let rest = "";
    try {
      for await (
        const chunk of this.child.stdout.pipeThrough(new TextDecoderStream())
      ) {
        rest += chunk;
        let nl;
        while ((nl = rest.indexOf("\n")) !== -1) {
          this.#lines.push(rest.slice(0, nl));
          rest = rest.slice(nl + 1);
        }
        for (const wake of this.#waiters.splice(0)) wake();
      }
    } catch {
      // Killed.
    }
    this.#ended = true;
    for (const wake of this.#waiters.splice(0)) wake();
  }

  async #pumpStderr(): Promise<void> {
    try {
      for await (
        const chunk of this.child.stderr.pipeThrough(new TextDecoderStream())
      ) {
        this.stderr = (this.stderr + chunk).slice(-2000);
      }
    } catch {
      // Killed.
    }
  }

  /** The next line starting with `tag` and a space: the rest of it. */
  async expect(tag: string, timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = this.#lines.findIndex((l) => l.startsWith(tag + " "));
      if (index !== -1) {
        return this.#lines.splice(index, 1)[0].slice(tag.length + 1);
      }
      if (this.#ended) {
        throw new Error(
          `${this.name} exited before ${tag}: ${this.stderr.trim()}`,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`${this.name}: no ${tag} in ${timeoutMs} ms`);
      }
      await orTimeout(
        new Promise<void>((resolve) => this.#waiters.push(resolve)),
        left,
        undefined,
      );
    }
  }

  /** Sends a command line (`gc`, `stats`); false if the child is gone. */
  async send(line: string): Promise<boolean> {
    try {
      await this.#writer.write(encoder.encode(line + "\n"));
      return true;
    } catch {
      return false;
    }
  }

  /** `gc`, waited for; false if the fixture has no control channel. */
  async gc(): Promise<boolean> {
    if (!await this.send("gc")) return false;
    const answer = await this.expect("GC", 5_000).catch(() => null);
    return answer !== null && JSON.parse(answer).collected === true;
  }

  /** `stats`: the fixture's own counters. */
  async stats(): Promise<Record<string, unknown>> {
    await this.send("stats");
    return JSON.parse(await this.expect("STATS", 5_000));
  }

  alive(): boolean {
    return !this.#ended;
  }

  kill(): void {
    try {
      this.child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }

  async stop(): Promise<void> {
    this.kill();
    await this.exited;
  }
}

type ServerKind =
  | "ours"
  | "builtin"
  | "bun"
  | "bare"
  | "bare_noread"
  | "bare_keep"
  | "bare_tls";

/** Starts an attacked server; resolves once it printed `READY <port>`. */
async function startServer(
  kind: ServerKind,
  args: string[] = [],
): Promise<{ fixture: Fixture; port: number }> {
  // `--server-v8-flags F`: more V8 flags for the attacked server (to see
  // what a runtime setting changes).
  const v8 = ["--expose-gc", flags["server-v8-flags"]].filter(Boolean);
  const deno = [Deno.execPath(), "run", "-A", `--v8-flags=${v8.join(",")}`];
  const cmd = kind === "ours"
    ? [...deno, "bench/abuse/server.ts", ...args]
    : kind === "builtin"
    ? [...deno, "bench/abuse/builtin_server.ts"]
    : kind === "bare" || kind === "bare_noread" || kind === "bare_keep" ||
        kind === "bare_tls"
    ? [...deno, "bench/abuse/bare_server.ts"]
    : ["bun", "bench/servers/bun.ts"];
  const fixture = new Fixture(
    `${kind} server`,
    cmd,
    kind === "bare_noread"
      ? { BARE_READ: "0" }
      : kind === "bare_keep"
      ? { BARE_KEEP: "1" }
      : kind === "bare_tls"
      ? { BARE_TLS_CLOSE_MS: args[0] ?? "2000" }
      : {},
  );
  try {
    const port = Number(await fixture.expect("READY", 30_000));
    return { fixture, port };
  } catch (error) {
    await fixture.stop();
    throw error;
  }
}

// -- Memory --

/** VmRSS and VmHWM of `pid`, in bytes (NaN once it is gone). */
function memoryOf(pid: number): { rss: number; hwm: number } {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kb = (field: string) =>
      Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1]) *
      1024;
    return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
  } catch {
    return { rss: NaN, hwm: NaN };
  }
}

/** Samples a process's VmRSS every `everyMs` until stopped. */
class Sampler {
  peak = 0;
  #timer: ReturnType<typeof setInterval>;
  #pid: number;

  constructor(pid: number, everyMs = 50) {
    this.#pid = pid;
    this.#sample();
    this.#timer = setInterval(() => this.#sample(), everyMs);
  }

  #sample(): void {
    const { rss } = memoryOf(this.#pid);
    if (rss > this.peak) this.peak = rss;
  }

  /** Stops; the peak, VmHWM included (the sampler may miss a spike). */
  stop(): { peak: number; hwm: number } {
    clearInterval(this.#timer);
    this.#sample();
    return { peak: this.peak, hwm: memoryOf(this.#pid).hwm };
  }
}

/**
 * Warms up a server (a few connections that echo a message and leave),
 * forces a GC and returns its RSS: the baseline.
 */
async function serverBaseline(fixture: Fixture, port: number): Promise<number> {
  for (let i = 0; i < 20; i++) await echoOnce(port, 4096);
  await sleep(500);
  await fixture.gc();
  await sleep(500);
  return memoryOf(fixture.pid).rss;
}

/** Forces a GC (where the fixture can) and returns the RSS after a pause. */
async function settledRss(fixture: Fixture, pauseMs = 1000): Promise<number> {
  await fixture.gc();
  await sleep(pauseMs);
  return memoryOf(fixture.pid).rss;
}

/**
 * Upgrades, sends one text message of `size` bytes and waits for its echo;
 * true if it came within 3 s.
 */
async function echoOnce(port: number, size = 64): Promise<boolean> {
  let conn: Deno.Conn | undefined;
  const attempt = async () => {
    const up = await upgrade(port);
    conn = up.conn;
    const text = "x".repeat(size);
    await writeAll(conn, frame(TEXT, encoder.encode(text), { masked: true }));
    const echoed = await up.reader.readFrame();
    if (echoed?.opcode !== TEXT || decoder.decode(echoed.payload) !== text) {
      return false;
    }
    await writeAll(
      conn,
      frame(CLOSE, new Uint8Array([3, 232]), { masked: true }),
    );
    await orTimeout(up.reader.readToEnd(), 1000, null);
    return true;
  };
  try {
    return await orTimeout(attempt(), 3000, false);
  } catch {
    return false;
  } finally {
    if (conn) closeQuietly(conn);
  }
}

/** Runs `task(i)` for i < `count`, `concurrency` at a time, until `deadline`. */
async function pool(
  count: number,
  concurrency: number,
  deadline: number,
  task: (i: number) => Promise<void>,
): Promise<{ done: number; failed: number; firstError: string }> {
  let next = 0;
  let done = 0;
  let failed = 0;
  let firstError = "";
  const worker = async () => {
    while (next < count && Date.now() < deadline) {
      const i = next++;
      try {
        await task(i);
        done++;
      } catch (error) {
        failed++;
        if (firstError === "") firstError = String(error);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { done, failed, firstError };
}

/** TCP counters of the network namespace (/proc/net/netstat, TcpExt). */
function tcpExt(name: string): number {
  const lines = Deno.readTextFileSync("/proc/net/netstat").split("\n");
  const i = lines.findIndex((l) => l.startsWith("TcpExt:"));
  const names = lines[i].split(/\s+/);
  const values = lines[i + 1].split(/\s+/);
  return Number(values[names.indexOf(name)]);
}

// -- Raw server for the client side --

/**
 * Starts the client fixture against a raw listener here, does the upgrade
 * by hand (with `extraHeaders` on the 101) and waits for the client to
 * report it is open.
 */
async function startClient(
  args: string[] = [],
  extraHeaders = "",
): Promise<
  {
    fixture: Fixture;
    conn: Deno.Conn;
    reader: Reader;
    request: string;
    close(): Promise<void>;
  }
> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const fixture = new Fixture("client", [
    Deno.execPath(),
    "run",
    "-A",
    "--v8-flags=--expose-gc",
    "bench/abuse/client.ts",
    `ws://127.0.0.1:${listener.addr.port}/`,
    ...args,
  ]);
  try {
    const conn = await orTimeout(listener.accept(), 30_000, null);
    if (conn === null) throw new Error("The client fixture did not connect");
    const reader = new Reader(conn);
    const request = await acceptUpgrade(reader, extraHeaders);
    await fixture.expect("OPEN", 10_000);
    return {
      fixture,
      conn,
      reader,
      request,
      async close() {
        closeQuietly(conn);
        listener.close();
        await fixture.stop();
      },
    };
  } catch (error) {
    listener.close();
    await fixture.stop();
    throw error;
  }
}

/** Warms up the client (a few echoed messages), GC, its RSS. */
async function clientBaseline(
  fixture: Fixture,
  conn: Deno.Conn,
  reader: Reader,
): Promise<number> {
  for (let i = 0; i < 20; i++) {
    await writeAll(
      conn,
      frame(TEXT, encoder.encode("x".repeat(4096)), { masked: false }),
    );
    const echoed = await orTimeout(reader.readFrame(), 3000, null);
    if (echoed?.opcode !== TEXT) throw new Error("The client did not echo");
  }
  await sleep(500);
  return await settledRss(fixture, 500);
}

// -- 1. Ping flood --

/**
 * Writes `count` copies of `ping`, in batches, one write in flight, for at
 * most `ms`, or until a write has not completed for `stallMs` (the peer
 * stopped reading). Returns how many pings TCP took.
 */
async function floodPings(
  conn: Deno.Conn,
  ping: Uint8Array,
  count: number,
  ms: number,
  stallMs: number,
): Promise<
  { sent: number; seconds: number; lastWriteSeconds: number; stopped: string }
> {
  const batch = 500;
  const bytes = new Uint8Array(ping.length * batch);
  for (let i = 0; i < batch; i++) bytes.set(ping, i * ping.length);
  const t0 = performance.now();
  const deadline = t0 + ms;
  let sent = 0;
  let offset = 0;
  let stopped = "count";
  let lastProgress = t0;
  // A write still pending when we stop is abandoned (the connection is
  // closed under it); nothing is written after it.
  outer: while (sent < count) {
    const want = Math.min(batch, count - sent) * ping.length;
    offset = 0;
    while (offset < want) {
      const left = deadline - performance.now();
      if (left <= 0) {
        stopped = "time";
        break outer;
      }
      const n = await orTimeout(
        conn.write(bytes.subarray(offset, want)).catch(() => -1),
        Math.min(left, stallMs),
        "stalled" as const,
      );
      if (n === "stalled") {
        stopped = performance.now() >= deadline ? "time" : "throttled";
        break outer;
      }
      if (n < 0) {
        stopped = "connection lost";
        break outer;
      }
      offset += n;
      lastProgress = performance.now();
    }
    sent += want / ping.length;
    offset = 0;
  }
  sent += Math.floor(offset / ping.length);
  return {
    sent,
    seconds: Math.round((performance.now() - t0) / 100) / 10,
    lastWriteSeconds: Math.round((lastProgress - t0) / 100) / 10,
    stopped,
  };
}

function floodFigure(
  result: { sent: number; seconds: number; lastWriteSeconds: number },
): string {
  const sent = result.sent.toLocaleString("en-US");
  const of = PING_FLOOD.count().toLocaleString("en-US");
  return `RSS growth (max during); pings taken: ${sent} of ${of}, the last ` +
    `at ${result.lastWriteSeconds} s of ${result.seconds} s`;
}

const PING_FLOOD = {
  count: () => scaled(1_000_000),
  ms: 20_000,
  // No early stop: a throttled flooder keeps a write pending to the end.
  stallMs: 20_000,
  bound: 32 * MIB,
};

async function pingFloodServer(): Promise<void> {
  // `--server builtin` (or bare) runs the rounds against a reference.
  const kind = (flags.server ?? "ours") as ServerKind;
  const { fixture, port } = await startServer(kind);
  try {
    const baseline = await serverBaseline(fixture, port);
    const { conn } = await upgrade(port);
    const sampler = new Sampler(fixture.pid);
    const ping = frame(PING, new Uint8Array(125).fill(0x61), { masked: true });
    const result = await floodPings(
      conn,
      ping,
      PING_FLOOD.count(),
      PING_FLOOD.ms,
      PING_FLOOD.stallMs,
    );
    await sleep(500);
    const { peak, hwm } = sampler.stop();
    closeQuietly(conn);
    const healthy = await echoOnce(port);
    const growth = peak - baseline;
    row({
      attack: "ping flood",
      side: "server",
      figure: floodFigure(result),
      value: signedMib(growth),
      bound: `≤ +${PING_FLOOD.bound / MIB} MiB`,
      pass: growth <= PING_FLOOD.bound,
      details: {
        baseline,
        peak,
        hwm,
        ...result,
        echoAfterwards: healthy,
      },
    });
  } finally {
    await fixture.stop();
  }
}

async function pingFloodClient(): Promise<void> {
  const client = await startClient();
  try {
    const baseline = await clientBaseline(
      client.fixture,
      client.conn,
      client.reader,
    );
    const sampler = new Sampler(client.fixture.pid);
    const ping = frame(PING, new Uint8Array(125).fill(0x61), { masked: false });
    const result = await floodPings(
      client.conn,
      ping,
      PING_FLOOD.count(),
      PING_FLOOD.ms,
      PING_FLOOD.stallMs,
    );
    await sleep(500);
    const { peak, hwm } = sampler.stop();
    const growth = peak - baseline;
    row({
      attack: "ping flood",
      side: "client",
      figure: floodFigure(result),
      value: signedMib(growth),
      bound: `≤ +${PING_FLOOD.bound / MIB} MiB`,
      pass: growth <= PING_FLOOD.bound,
      details: { baseline, peak, hwm, ...result },
    });
  } finally {
    await client.close();
  }
}

// -- 2. Garbage instead of HTTP --

/** xorshift32: reproducible random bytes. */
function randomBytes(seed: number): (n: number) => Uint8Array {
  let x = seed || 1;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
  return (n) => {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = next() & 0xff;
    return out;
  };
}

async function garbage(): Promise<void> {
  const count = scaled(1000);
  // `--server builtin` (or bare) runs the rounds against a reference.
  const kind = (flags.server ?? "ours") as ServerKind;
  const { fixture, port } = await startServer(kind);
  try {
    const baseline = await serverBaseline(fixture, port);
    const random = randomBytes(0x5eed);
    const sampler = new Sampler(fixture.pid);
    let answered = 0;
    let closed = 0;
    let both = 0;
    const statuses = new Map<string, number>();
    const times: number[] = [];
    const result = await pool(count, 50, Date.now() + 120_000, async (i) => {
      const bytes = random(1024 + ((i * 2654435761) >>> 0) % 3073);
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        const reader = new Reader(conn);
        const t0 = performance.now();
        await writeAll(conn, bytes).catch(() => {});
        const got = await orTimeout(reader.readToEnd(), 2000, null);
        const ms = performance.now() - t0;
        const text = decoder.decode(got ?? new Uint8Array(0));
        const status = text.split("\r\n")[0].slice(0, 40) || "(nothing)";
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
        const is400 = text.startsWith("HTTP/1.1 400");
        const ended = got !== null && reader.ended;
        if (is400) answered++;
        if (ended) {
          closed++;
          times.push(ms);
        }
        if (is400 && ended) both++;
      } finally {
        closeQuietly(conn);
      }
    });
    const { peak } = sampler.stop();
    times.sort((a, b) => a - b);
    row({
      attack: "garbage instead of HTTP",
      side: "server",
      figure: `connections answered 400 and closed within 2 s (of ${count})`,
      value: `${both} / ${count}`,
      bound: `${count} / ${count}`,
      pass: both === count,
      details: {
        answered400: answered,
        closedWithin2s: closed,
        statuses: Object.fromEntries(statuses),
        closeMsMedian: Math.round(times[times.length >> 1] ?? NaN),
        closeMsMax: Math.round(times.at(-1) ?? NaN),
        rssGrowthPeak: peak - baseline,
        ...result,
      },
    });
  } finally {
    await fixture.stop();
  }
}

// -- 3. TLS never started --

async function tlsSilent(): Promise<void> {
  const count = scaled(20);
  const handshakeTimeout = 2000;
  // `--server bare`: the runtime's floor, a bare `Deno.listenTls` server
  // that closes each connection after the same timeout.
  const bare = flags.server === "bare";
  const { fixture, port } = bare
    ? await startServer("bare_tls", [String(handshakeTimeout)])
    : await startServer("ours", [
      "--tls",
      "--handshake-timeout",
      String(handshakeTimeout),
    ]);
  const conns: Deno.Conn[] = [];
  try {
    const t0 = performance.now();
    for (let i = 0; i < count; i++) {
      conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    }
    const window = handshakeTimeout + 1000;
    const ends = await Promise.all(conns.map(async (conn) => {
      const reader = new Reader(conn);
      const left = window - (performance.now() - t0);
      const got = await orTimeout(reader.readToEnd(), left, null);
      return got === null ? null : performance.now() - t0;
    }));
    const closed = ends.filter((t) => t !== null) as number[];
    // A real wss:// client, while the silent connections are still open
    // wherever the server did not close them.
    let wss = bare ? "not tried (bare server)" : "failed";
    if (!bare) {
      try {
        const ca = Deno.readTextFileSync(
          new URL("tests/fixtures/localhost.crt", ROOT),
        );
        const sock = await orTimeout(
          connect(`wss://localhost:${port}/`, { caCerts: [ca] }),
          5000,
          null,
        );
        if (sock === null) wss = "timed out";
        else {
          await sock.write("hello", "text");
          const msg = await orTimeout(sock.read(), 3000, null);
          wss = msg?.type === "text" && msg.data === "hello"
            ? "connected and echoed"
            : `connected, no echo (${JSON.stringify(msg)})`;
          await orTimeout(sock.close(), 3000, null);
        }
      } catch (error) {
        wss = `failed: ${error}`;
      }
    }
    const stats = await fixture.stats().catch(() => ({}));
    const established = await establishedOn(port);
    row({
      attack: bare
        ? "TLS never started, bare Deno.listenTls closing after 2 s (floor)"
        : "TLS never started (wss://, handshakeTimeout 2 s)",
      side: "server",
      figure:
        `silent TCP connections closed by the server within ${window} ms; a wss client then: ${wss}`,
      value: `${closed.length} / ${count}`,
      bound: `${count} / ${count}`,
      pass: closed.length === count &&
        (bare || wss === "connected and echoed"),
      details: {
        closeMs: closed.map(Math.round),
        wss,
        serverSocketsStillEstablished: established,
        serverConnectionsAfter: (stats as Record<string, unknown>).connections,
      },
    });
  } finally {
    for (const conn of conns) closeQuietly(conn);
    await fixture.stop();
  }
}

/**
 * How many TCP sockets bound to local port `port` are ESTABLISHED (the
 * server's ends of its accepted connections), from `ss`; null without it.
 */
async function establishedOn(port: number): Promise<number | null> {
  try {
    const out = await new Deno.Command("ss", {
      args: ["-Htn", "state", "established", `( sport = :${port} )`],
      stdout: "piped",
      stderr: "null",
    }).output();
    if (!out.success) return null;
    return decoder.decode(out.stdout).split("\n").filter((l) => l.trim())
      .length;
  } catch {
    return null;
  }
}

// -- 4. Idle connections --

async function idle(): Promise<void> {
  const count = scaled(10_000);
  const limits = openFilesLimits();
  if (limits.soft < count + 200) {
    throw new Error(
      `Need ${count + 200} descriptors, have ${limits.soft} (ulimit -n)`,
    );
  }
  const all = ["ours", "builtin", "bun", "bare", "bare_noread"] as const;
  // `--server ours,bare`: only those rows (all five by default).
  const chosen = flags.server?.split(",").map((s) => s.trim());
  for (const kind of all) {
    if (chosen !== undefined && !chosen.includes(kind)) continue;
    if (kind === "bun" && !await hasBun()) {
      log("idle: bun not found, skipping its reference row");
      continue;
    }
    const { fixture, port } = await startServer(kind);
    const conns: Deno.Conn[] = [];
    try {
      const baseline = await serverBaseline(fixture, port);
      const statsBefore = kind === "bun"
        ? {}
        : await fixture.stats().catch(() => ({}));
      const t0 = performance.now();
      const result = await pool(count, 200, Date.now() + 120_000, async () => {
        const { conn } = await upgrade(port);
        conns.push(conn);
      });
      const openMs = performance.now() - t0;
      await sleep(2000);
      const after = await settledRss(fixture);
      const stats = await fixture.stats().catch(() => ({}));
      const perConnKiB = (after - baseline) / conns.length / 1024;
      // Where it is, as the runtime counts it: the V8 heap and ArrayBuffers.
      const perConn = (field: string) => {
        const a = (stats as Record<string, unknown>)[field];
        const b = (statsBefore as Record<string, unknown>)[field];
        return typeof a === "number" && typeof b === "number"
          ? Math.round((a - b) / conns.length / 1024 * 10) / 10
          : undefined;
      };
      const heapKiB = perConn("heapUsed");
      const externalKiB = perConn("external");
      const split = heapKiB === undefined
        ? ""
        : `; of it V8 heap ${heapKiB} KiB, ArrayBuffers ${externalKiB} KiB`;
      const bound = 4;
      row({
        attack: `idle connections (${
          kind === "ours"
            ? "ours"
            : kind === "builtin"
            ? "Deno.serve + upgradeWebSocket"
            : kind === "bare"
            ? "bare Deno.Conn, one 16 B read pending"
            : kind === "bare_noread"
            ? "bare Deno.Conn, no read pending"
            : "Bun.serve"
        })`,
        side: "server",
        figure: `(RSS with ${
          conns.length.toLocaleString("en-US")
        } idle − baseline) / connections${
          kind === "bun" ? " (no forced GC)" : ""
        }${split}`,
        value: `${perConnKiB.toFixed(2)} KiB`,
        bound: kind === "ours" ? `≤ ${bound} KiB` : "—",
        pass: kind === "ours"
          ? perConnKiB <= bound && conns.length === count
          : null,
        details: {
          baseline,
          after,
          held: conns.length,
          openSeconds: Math.round(openMs / 100) / 10,
          serverConnections: (stats as Record<string, unknown>).connections,
          heapKiBPerConnection: heapKiB,
          externalKiBPerConnection: externalKiB,
          ...result,
        },
      });
    } finally {
      // The server goes first: its side closes, ours does not linger.
      await fixture.stop();
      for (const conn of conns) closeQuietly(conn);
    }
  }
}

let bunChecked: boolean | undefined;
async function hasBun(): Promise<boolean> {
  if (bunChecked === undefined) {
    try {
      const out = await new Deno.Command("bun", {
        args: ["--version"],
        stdout: "null",
        stderr: "null",
      }).output();
      bunChecked = out.success;
    } catch {
      bunChecked = false;
    }
  }
  return bunChecked;
}

// -- 5, 6. Storms that end in resets --

/**
 * Closes `conn` with bytes it never read still in its receive queue, so
 * the kernel answers with RST rather than FIN (Deno has no SO_LINGER).
 */
function reset(conn: Deno.Conn): void {
  closeQuietly(conn);
}

/**
 * Upgrades, sends an empty ping and reads one byte of the 2-byte pong: the
 * server is past the upgrade, and one unread byte is left for `reset`.
 */
async function upgradeForReset(port: number): Promise<Deno.TcpConn> {
  const { conn } = await upgrade(port);
  try {
    await writeAll(conn, frame(PING, new Uint8Array(0), { masked: true }));
    const n = await conn.read(new Uint8Array(1));
    if (n !== 1) throw new Error("No pong");
    return conn;
  } catch (error) {
    closeQuietly(conn);
    throw error;
  }
}

/**
 * Runs `rounds` identical rounds against one server; each returns once the
 * attack is over, then the RSS is read `afterMs` later (no forced GC: what
 * the server holds on its own). Two rows: round 1 after − baseline, and
 * round N after − round 1 after.
 */
async function roundsOf(
  attack: string,
  rounds: number,
  afterMs: number,
  bounds: { first: number; growth: number },
  oneRound: (port: number) => Promise<Record<string, unknown>>,
): Promise<void> {
  // `--server builtin` (or bare) runs the rounds against a reference.
  const kind = (flags.server ?? "ours") as ServerKind;
  const { fixture, port } = await startServer(kind);
  try {
    const baseline = await serverBaseline(fixture, port);
    const afters: number[] = [];
    const aftersGc: number[] = [];
    const perRound: Record<string, unknown>[] = [];
    for (let r = 1; r <= rounds; r++) {
      const resetsBefore = tcpExt("TCPAbortOnClose");
      const sampler = new Sampler(fixture.pid);
      const t0 = performance.now();
      const info = await oneRound(port);
      const seconds = (performance.now() - t0) / 1000;
      await sleep(afterMs);
      const { peak } = sampler.stop();
      const after = memoryOf(fixture.pid).rss;
      const stats = await fixture.stats().catch(() => ({}));
      // Not part of the figure: how much of it a full collection returns.
      const afterGc = await settledRss(fixture, 500);
      afters.push(after);
      aftersGc.push(afterGc);
      perRound.push({
        round: r,
        seconds: Math.round(seconds * 10) / 10,
        peakGrowth: peak - baseline,
        afterGrowth: after - baseline,
        afterGcGrowth: afterGc - baseline,
        resetsSent: tcpExt("TCPAbortOnClose") - resetsBefore,
        serverConnections: (stats as Record<string, unknown>).connections,
        serverMemory: stats,
        ...info,
      });
      log(`${attack}: round ${r}: ${JSON.stringify(perRound.at(-1))}`);
    }
    const healthy = await echoOnce(port);
    const first = afters[0] - baseline;
    row({
      attack,
      side: "server",
      figure: `RSS ${
        afterMs / 1000
      } s after round 1 − baseline (after a forced GC: ${
        signedMib(aftersGc[0] - baseline)
      })`,
      value: signedMib(first),
      bound: `≤ +${bounds.first / MIB} MiB`,
      pass: first <= bounds.first && healthy,
      details: { baseline, rounds: perRound, echoAfterwards: healthy },
    });
    const growth = afters[rounds - 1] - afters[0];
    row({
      attack,
      side: "server",
      figure: `growth from round 1's after-figure to round ${rounds}'s ` +
        `(after forced GCs: ${signedMib(aftersGc[rounds - 1] - aftersGc[0])})`,
      value: signedMib(growth),
      bound: `≤ +${bounds.growth / MIB} MiB`,
      pass: growth <= bounds.growth,
      details: {
        afters: afters.map((a) => mib(a)),
        aftersGc: aftersGc.map((a) => mib(a)),
      },
    });
  } finally {
    await fixture.stop();
  }
}

async function storm(): Promise<void> {
  const count = scaled(5000);
  await roundsOf(
    "upgrade storm then reset",
    3,
    5000,
    { first: 16 * MIB, growth: 8 * MIB },
    async (port) => {
      const result = await pool(
        count,
        500,
        Date.now() + 120_000,
        async () => reset(await upgradeForReset(port)),
      );
      return { upgraded: result.done, ...result };
    },
  );
}

async function halfFrame(): Promise<void> {
  const count = scaled(1000);
  // Header declaring 65,536 bytes, then 32 KiB of masked payload.
  const half = frame(BINARY, new Uint8Array(32 * 1024).fill(0x42), {
    masked: true,
    declaredLength: 64 * 1024,
  });
  await roundsOf(
    "half a frame then reset",
    3,
    3000,
    { first: 16 * MIB, growth: 8 * MIB },
    async (port) => {
      const conns: Deno.Conn[] = [];
      const result = await pool(count, 200, Date.now() + 120_000, async () => {
        const conn = await upgradeForReset(port);
        conns.push(conn);
        await writeAll(conn, half);
      });
      // Every half frame is out before the first reset.
      await sleep(300);
      for (const conn of conns) reset(conn);
      return { held: conns.length, ...result };
    },
  );
}

// -- 7. UTF-8 mid-frame --

/** A 16 KiB text frame with 0xFF in the middle, cut in three writes. */
function utf8Parts(masked: boolean): Uint8Array[] {
  const size = 16 * 1024;
  const payload = new Uint8Array(size).fill(0x61);
  const bad = size / 2;
  payload[bad] = 0xff;
  const bytes = frame(TEXT, payload, { masked });
  const header = bytes.length - size;
  return [
    bytes.subarray(0, header + bad),
    bytes.subarray(header + bad, header + bad + 1),
    bytes.subarray(header + bad + 1),
  ];
}

/**
 * Writes the first two parts, then waits up to 1 s for a close frame;
 * writes the third part after. Returns the close code seen before the
 * third write (or null) and how long after the second write it came.
 */
async function utf8Attack(
  conn: Deno.Conn,
  reader: Reader,
  parts: Uint8Array[],
): Promise<{ code: number | null; ms: number; note: string }> {
  (conn as Deno.TcpConn).setNoDelay(true);
  await writeAll(conn, parts[0]);
  await sleep(20);
  await writeAll(conn, parts[1]);
  const t0 = performance.now();
  const close = orTimeout(
    (async () => {
      for (;;) {
        const f = await reader.readFrame();
        if (f === null) return "eof" as const;
        if (f.opcode === CLOSE) return f;
      }
    })(),
    1000,
    "timeout" as const,
  );
  const got = await close;
  const ms = performance.now() - t0;
  await writeAll(conn, parts[2]).catch(() => {});
  if (typeof got === "string") return { code: null, ms, note: got };
  const code = got.payload.length >= 2
    ? (got.payload[0] << 8) | got.payload[1]
    : 1005;
  return { code, ms, note: decoder.decode(got.payload.subarray(2)) };
}

/** The row of the UTF-8 attack on one side. */
function utf8Row(
  side: "server" | "client",
  r: Awaited<ReturnType<typeof utf8Attack>>,
): void {
  row({
    attack: "UTF-8 invalid mid-frame",
    side,
    figure: "close 1007 before the third write (≤ 1 s after the 0xFF)",
    value: r.code === 1007
      ? `yes (${Math.round(r.ms)} ms)`
      : `no (${r.code ?? r.note})`,
    bound: "yes",
    pass: r.code === 1007,
    details: r,
  });
}

async function utf8Server(): Promise<void> {
  const { fixture, port } = await startServer("ours");
  try {
    const { conn, reader } = await upgrade(port);
    try {
      utf8Row("server", await utf8Attack(conn, reader, utf8Parts(true)));
    } finally {
      closeQuietly(conn);
    }
  } finally {
    await fixture.stop();
  }
}

async function utf8Client(): Promise<void> {
  const client = await startClient();
  try {
    utf8Row(
      "client",
      await utf8Attack(client.conn, client.reader, utf8Parts(false)),
    );
  } finally {
    await client.close();
  }
}

// -- 8. RFC 7692 7.2.3.4: a message that ends the DEFLATE stream --

const TAIL = new Uint8Array([0x00, 0x00, 0xff, 0xff]);

/** "Hello" deflated as one block with BFINAL=1 (RFC 7692 7.2.3.4). */
const BFINAL_HELLO = new Uint8Array([
  0xf3,
  0x48,
  0xcd,
  0xc9,
  0xc9,
  0x07,
  0x00,
  0x00,
]);
const SECOND = "and a normal compressed message after it";

/** `text` deflated as RFC 7692 sends it: sync flush, tail removed. */
function deflateMessage(text: string): Uint8Array {
  const out = deflateRawSync(encoder.encode(text), {
    finishFlush: zlib.Z_SYNC_FLUSH,
  });
  return new Uint8Array(out.subarray(0, out.length - TAIL.length));
}

/** Reads `count` data messages' texts (inflating RSV1 ones), 3 s each. */
async function readTexts(reader: Reader, count: number): Promise<string[]> {
  const texts: string[] = [];
  while (texts.length < count) {
    const f = await orTimeout(reader.readFrame(), 3000, null);
    if (f === null) break;
    if (f.opcode === CLOSE) {
      texts.push(`(close ${(f.payload[0] << 8) | f.payload[1]})`);
      break;
    }
    if (f.opcode !== TEXT) continue;
    const bytes = f.rsv1
      ? inflateRawSync(new Uint8Array([...f.payload, ...TAIL]))
      : f.payload;
    texts.push(decoder.decode(bytes));
  }
  return texts;
}

async function deflateAttack(
  conn: Deno.Conn,
  reader: Reader,
  masked: boolean,
): Promise<{ delivered: boolean; echoed: string[] }> {
  await writeAll(
    conn,
    frame(TEXT, BFINAL_HELLO, { masked, rsv1: true }),
  );
  await writeAll(
    conn,
    frame(TEXT, deflateMessage(SECOND), { masked, rsv1: true }),
  );
  const echoed = await readTexts(reader, 2);
  return {
    delivered: echoed[0] === "Hello" && echoed[1] === SECOND,
    echoed,
  };
}

async function deflateServer(): Promise<void> {
  const { fixture, port } = await startServer("ours", ["--compression"]);
  try {
    const { conn, reader, head } = await upgrade(
      port,
      "Sec-WebSocket-Extensions: permessage-deflate\r\n",
    );
    try {
      const negotiated = /permessage-deflate/i.test(head);
      const r = await deflateAttack(conn, reader, true);
      row({
        attack: "RFC 7692 7.2.3.4 (BFINAL=1 message, then a normal one)",
        side: "server",
        figure: "both messages delivered (echoed)",
        value: r.delivered ? "yes" : `no (${JSON.stringify(r.echoed)})`,
        bound: "yes",
        pass: negotiated && r.delivered,
        details: { negotiated, ...r },
      });
    } finally {
      closeQuietly(conn);
    }
  } finally {
    await fixture.stop();
  }
}

async function deflateClient(): Promise<void> {
  const client = await startClient(
    ["--compression"],
    "Sec-WebSocket-Extensions: permessage-deflate\r\n",
  );
  try {
    const offered = /permessage-deflate/i.test(client.request);
    const r = await deflateAttack(client.conn, client.reader, false);
    row({
      attack: "RFC 7692 7.2.3.4 (BFINAL=1 message, then a normal one)",
      side: "client",
      figure: "both messages delivered (echoed)",
      value: r.delivered ? "yes" : `no (${JSON.stringify(r.echoed)})`,
      bound: "yes",
      pass: offered && r.delivered,
      details: { offered, ...r },
    });
  } finally {
    await client.close();
  }
}

// -- Issue 4: slowloris, and declared lengths that must not be allocated --

async function slowloris(): Promise<void> {
  const count = scaled(100);
  const handshakeTimeout = 10_000; // the default
  const { fixture, port } = await startServer("ours");
  const conns: Deno.Conn[] = [];
  try {
    const baseline = await serverBaseline(fixture, port);
    const sampler = new Sampler(fixture.pid);
    const t0 = performance.now();
    const window = handshakeTimeout + 1000;
    const head = upgradeRequest(port, "X-Slow: " + "a".repeat(200));
    const trickles = Array.from({ length: count }, async () => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conns.push(conn);
      for (let i = 0; i < head.length; i++) {
        if (performance.now() - t0 > window) return null;
        const wrote = await conn.write(head.subarray(i, i + 1)).catch(() => 0);
        if (wrote === 0) return performance.now() - t0;
        // A closed connection shows on the next write or a read.
        await sleep(100);
        if (i % 10 === 9) {
          const ended = await orTimeout(
            conn.read(new Uint8Array(1024)).then(() => true, () => true),
            1,
            false,
          );
          if (ended) return performance.now() - t0;
        }
      }
      return null;
    });
    // A well-behaved client in the middle of it.
    await sleep(2000);
    const served = await echoOnce(port);
    const ends = await Promise.all(trickles);
    const { peak } = sampler.stop();
    const dropped = ends.filter((t) => t !== null) as number[];
    row({
      attack: `slowloris (${count} heads, 1 byte / 100 ms; issue 4)`,
      side: "server",
      figure:
        `dropped within handshakeTimeout (10 s) + 1 s; a good client served meanwhile: ${
          served ? "yes" : "no"
        }`,
      value: `${dropped.length} / ${count}`,
      bound: `${count} / ${count}`,
      pass: dropped.length === count && served,
      details: {
        droppedMsMin: Math.round(Math.min(...dropped)),
        droppedMsMax: Math.round(Math.max(...dropped)),
        rssGrowthPeak: peak - baseline,
      },
    });
  } finally {
    for (const conn of conns) closeQuietly(conn);
    await fixture.stop();
  }
}

async function announce(): Promise<void> {
  const count = scaled(200);
  const bound = 16 * MIB;
  const { fixture, port } = await startServer("ours");
  const conns: Deno.Conn[] = [];
  try {
    const baseline = await serverBaseline(fixture, port);
    const sampler = new Sampler(fixture.pid);
    // A header announcing 16 MiB (maxMessageSize), then 4 KiB of it.
    const part = frame(BINARY, new Uint8Array(4096).fill(0x42), {
      masked: true,
      declaredLength: 16 * MIB,
    });
    const result = await pool(count, 100, Date.now() + 60_000, async () => {
      const { conn } = await upgrade(port);
      conns.push(conn);
      await writeAll(conn, part);
    });
    await sleep(2000);
    const { peak, hwm } = sampler.stop();
    const growth = peak - baseline;
    row({
      attack:
        `declared lengths (${count} × 16 MiB announced, 4 KiB sent; issue 4)`,
      side: "server",
      figure: "RSS growth (max while held)",
      value: signedMib(growth),
      bound: `≤ +${bound / MIB} MiB (this suite's)`,
      pass: growth <= bound,
      details: { baseline, peak, hwm, held: conns.length, ...result },
    });
  } finally {
    for (const conn of conns) closeQuietly(conn);
    await fixture.stop();
  }
}

// -- Main --

const ATTACKS: [string, () => Promise<void>][] = [
  ["ping-flood", async () => {
    await pingFloodServer();
    await pingFloodClient();
  }],
  ["garbage", garbage],
  ["tls-silent", tlsSilent],
  ["idle", idle],
  ["storm", storm],
  ["half-frame", halfFrame],
  ["utf8", async () => {
    await utf8Server();
    await utf8Client();
  }],
  ["deflate-bfinal", async () => {
    await deflateServer();
    await deflateClient();
  }],
  ["slowloris", slowloris],
  ["announce", announce],
];

function render(): string {
  const cell = (s: string) => s.replaceAll("|", "\\|");
  const lines = [
    "| attack | side | figure | measured | bound | result |",
    "| --- | --- | --- | --- | --- | --- |",
  ];
  for (const r of rows) {
    const verdict = r.pass === null ? "ref" : r.pass ? "PASS" : "**FAIL**";
    lines.push(
      `| ${cell(r.attack)} | ${r.side} | ${cell(r.figure)} | ${
        cell(r.value)
      } | ${cell(r.bound)} | ${verdict} |`,
    );
  }
  return lines.join("\n");
}

async function main(): Promise<number> {
  if (ONLY) {
    const unknown = ONLY.filter((n) => !ATTACKS.some(([name]) => name === n));
    if (unknown.length > 0) {
      throw new TypeError(
        `--only: unknown attack ${unknown.join(", ")} (have ${
          ATTACKS.map(([n]) => n).join(", ")
        })`,
      );
    }
  }
  const t0 = performance.now();
  const failures: string[] = [];
  const limits = openFilesLimits();
  log(
    `scale ${SCALE}, open files ${limits.soft} (hard ${limits.hard}), deno ${Deno.version.deno}`,
  );
  for (const [name, run] of ATTACKS) {
    if (ONLY && !ONLY.includes(name)) continue;
    log(`-- ${name}`);
    const started = performance.now();
    try {
      await run();
    } catch (error) {
      failures.push(`${name}: ${error instanceof Error ? error.stack : error}`);
      log(`${name} could not run: ${error}`);
    }
    log(`-- ${name}: ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }
  killAll();
  const seconds = (performance.now() - t0) / 1000;
  console.log(render());
  for (const failure of failures) console.log(`\nCould not run: ${failure}`);
  console.log(
    `\n${rows.length} figures in ${seconds.toFixed(0)} s (scale ${SCALE})`,
  );
  if (flags.json !== undefined) {
    await Deno.writeTextFile(
      flags.json,
      JSON.stringify(
        {
          deno: Deno.version.deno,
          scale: SCALE,
          seconds: Math.round(seconds),
          rows,
          failures,
        },
        null,
        2,
      ) + "\n",
    );
  }
  const failed = rows.some((r) => r.pass === false) || failures.length > 0;
  return failed ? 1 : 0;
}

/**
 * Re-runs this script under `sh` with the descriptor limit raised when the
 * soft limit is below what the idle attack needs and the hard one allows
 * more.
 */
async function reexecWithUlimit(): Promise<number | null> {
  const limits = openFilesLimits();
  const want = Math.min(65536, limits.hard);
  if (limits.soft >= want || Deno.env.get("ABUSE_ULIMIT") === "1") return null;
  const [exe, ...args] = withUlimit([
    Deno.execPath(),
    "run",
    "-A",
    new URL(import.meta.url).pathname,
    ...Deno.args,
  ]);
  reexecuted = new Deno.Command(exe, {
    args,
    env: { ABUSE_ULIMIT: "1" },
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  return (await reexecuted.status).code;
}

if (import.meta.main) {
  const code = (await reexecWithUlimit()) ?? await main();
  Deno.exit(code);
}
