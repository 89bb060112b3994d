/**
 * The benchmark runner (`deno task bench`): starts each contestant's echo
 * server, drives it with load.ts (a separate process, so server and load
 * each get a core, pinned with `taskset` when it exists), samples the
 * measured process's CPU time and peak RSS from /proc, and prints a
 * markdown report. Contestants run interleaved, in a rotated order each
 * round.
 *
 * Flags:
 *   --only S1,S3,C1     scenarios to run (default: all)
 *   --contestants ours,builtin   (default: every one available)
 *   --rounds N          rounds per scenario (default 3)
 *   --duration S        measured seconds per run (default 3)
 *   --warmup S          warm-up seconds per run (default 1)
 *   --out FILE          also write the report to FILE
 *   --json FILE         also write every run's raw numbers to FILE
 *   --report FILE       re-render the report of a --json FILE (runs nothing)
 *   --no-pin            do not pin processes to cores
 *   --baseline DIR      also run DIR's `ours` (another checkout of this
 *                       repository) as contestant `baseline`, interleaved
 *   --baseline-as NAME  run DIR's server as contestant NAME does (ours,
 *                       ours_nowait or ours_stream; default ours)
 *   --fast-server NAME  the echo server of the client scenarios (default:
 *                       bun when installed, else ws_node, else builtin)
 *   --retry-disturbed N rerun a run up to N times while the rest of the
 *                       machine used over 25 % CPU during it (default 1)
 *   --deno-churn        drive S5 with load.ts rather than bench/churn.c
 *
 * S5 (connection churn) is driven by bench/churn.c, built on demand into
 * bench/.build/ with `cc`/`gcc`: load.ts's churn mode saturates its own
 * core before most servers do. Without a compiler S5 falls back to load.ts.
 *
 * Run: deno run -A bench/run.ts --rounds 1 --duration 2
 *
 * @module
 */

import { type LoadResult, num, parseFlags, sleep } from "./_common.ts";

const BENCH = new URL(".", import.meta.url).pathname;
const ROOT = new URL("..", import.meta.url).pathname;
const NODE_DIR = `${BENCH}.node`;

const MiB = 1024 * 1024;

// ------------------------------------------------------------- scenarios

interface Scenario {
  id: string;
  title: string;
  unit: "msg/s" | "MB/s" | "conn/s" | "deliveries/s";
  /** load.ts flags (S) or client flags (C). */
  args: string[];
  /** `server`: contestants are servers driven by load.ts; `client`: contestants are clients of a fixed server. */
  side: "server" | "client";
}

const SCENARIOS: Scenario[] = [
  {
    id: "S1",
    title: "echo, 64 connections × 32 B binary, 32 in flight each",
    unit: "msg/s",
    side: "server",
    args: ["--mode", "echo", "--conns", "64", "--size", "32", "--window", "32"],
  },
  {
    id: "S2",
    title: "echo, 64 connections × 256 B UTF-8 text, 32 in flight each",
    unit: "msg/s",
    side: "server",
    args: [
      "--mode",
      "echo",
      "--conns",
      "64",
      "--size",
      "256",
      "--window",
      "32",
      "--text",
    ],
  },
  {
    id: "S3",
    title: "echo, 4 connections × 1 MiB binary, 2 in flight each",
    unit: "MB/s",
    side: "server",
    args: [
      "--mode",
      "echo",
      "--conns",
      "4",
      "--size",
      `${MiB}`,
      "--window",
      "2",
    ],
  },
  {
    id: "S4",
    title:
      "echo, 4 connections × 1 MiB sent as 16 × 64 KiB fragments, 2 in flight each",
    unit: "MB/s",
    side: "server",
    args: [
      "--mode",
      "echo",
      "--conns",
      "4",
      "--size",
      `${MiB}`,
      "--window",
      "2",
      "--frag",
      "65536",
    ],
  },
  {
    id: "S5",
    title:
      "connection churn: connect, handshake, one 16 B echo, close handshake; 32 concurrent",
    unit: "conn/s",
    side: "server",
    args: ["--mode", "churn", "--conns", "32", "--size", "16"],
  },
  {
    id: "S6",
    title:
      "fan-out with topics: one publisher keeps 8 broadcasts of 64 B in flight to 1,000 subscribers",
    unit: "deliveries/s",
    side: "server",
    args: [
      "--mode",
      "fanout",
      "--conns",
      "1000",
      "--size",
      "64",
      "--window",
      "8",
    ],
  },
  {
    id: "C1",
    title: "client side of S1: 64 connections × 32 B binary, 32 in flight each",
    unit: "msg/s",
    side: "client",
    args: ["--conns", "64", "--size", "32", "--window", "32"],
  },
  {
    id: "C3",
    title: "client side of S3: 4 connections × 1 MiB binary, 2 in flight each",
    unit: "MB/s",
    side: "client",
    args: ["--conns", "4", "--size", `${MiB}`, "--window", "2"],
  },
];

// ------------------------------------------------------------- contestants

interface Contestant {
  name: string;
  label: string;
  cmd: string[];
  /** The scenarios it serves, when not all. */
  scenarios?: string[];
  /** Environment for the server process (on top of `PORT`). */
  env?: Record<string, string>;
}

const DENO = Deno.execPath();

const SERVERS: Record<string, Contestant> = {
  builtin: {
    name: "builtin",
    label: "Deno built-in (`Deno.upgradeWebSocket`)",
    cmd: [
      DENO,
      "run",
      "--allow-net",
      "--allow-env",
      `${BENCH}servers/builtin.ts`,
    ],
  },
  ours: {
    name: "ours",
    label:
      "@silly/websocket `listen`, awaiting each write (the README's idiom)",
    cmd: [DENO, "run", "--allow-net", "--allow-env", `${BENCH}servers/ours.ts`],
  },
  ours_nowait: {
    name: "ours_nowait",
    label: "@silly/websocket `listen`, writes not awaited",
    cmd: [DENO, "run", "--allow-net", "--allow-env", `${BENCH}servers/ours.ts`],
    env: { NOWAIT: "1" },
    scenarios: ["S1", "S2", "S3", "S4", "S5"],
  },
  ours_stream: {
    name: "ours_stream",
    label:
      "@silly/websocket `listen`, echoing in pieces: `readStream()` into `write(stream)`",
    cmd: [DENO, "run", "--allow-net", "--allow-env", `${BENCH}servers/ours.ts`],
    env: { STREAM: "1" },
    scenarios: ["S3", "S4"],
  },
  ours_frag1m: {
    name: "ours_frag1m",
    label:
      "@silly/websocket `listen`, the README's idiom with `fragmentSize: 1 MiB`",
    cmd: [DENO, "run", "--allow-net", "--allow-env", `${BENCH}servers/ours.ts`],
    env: { FRAGMENT_SIZE: `${1024 * 1024}` },
    scenarios: ["S3", "S4"],
  },
  ws_node: {
    name: "ws_node",
    label: "`ws` 8 on Node",
    cmd: ["node", `${BENCH}servers/ws_node.mjs`],
  },
  bun: {
    name: "bun",
    label: "Bun (`Bun.serve`)",
    cmd: ["bun", `${BENCH}servers/bun.ts`],
  },
  bare: {
    name: "bare",
    label: "bare `Deno.Conn` echo (a floor: no API, no checks)",
    cmd: [DENO, "run", "--allow-net", "--allow-env", `${BENCH}servers/bare.ts`],
    scenarios: ["S1", "S2", "S3", "S4", "S5"],
  },
  bare_text: {
    name: "bare_text",
    label: "bare echo that decodes and re-encodes text (the floor for S2)",
    cmd: [DENO, "run", "--allow-net", "--allow-env", `${BENCH}servers/bare.ts`],
    env: { BARE: "text" },
    scenarios: ["S2"],
  },
  bare_reuse: {
    name: "bare_reuse",
    label: "bare echo with one reused buffer per connection (S3 memory floor)",
    cmd: [DENO, "run", "--allow-net", "--allow-env", `${BENCH}servers/bare.ts`],
    env: { BARE: "reuse" },
    scenarios: ["S3"],
  },
};

const CLIENTS: Record<string, Contestant> = {
  builtin: {
    name: "builtin",
    label: "Deno built-in `WebSocket`",
    cmd: [DENO, "run", "--allow-net", `${BENCH}clients/builtin.ts`],
  },
  ours: {
    name: "ours",
    label:
      "@silly/websocket `connect`, awaiting each write (the README's idiom)",
    cmd: [DENO, "run", "--allow-net", "--allow-env", `${BENCH}clients/ours.ts`],
  },
  ours_nowait: {
    name: "ours_nowait",
    label: "@silly/websocket `connect`, writes not awaited",
    cmd: [DENO, "run", "--allow-net", "--allow-env", `${BENCH}clients/ours.ts`],
    env: { NOWAIT: "1" },
  },
};

/** `ours` (server or client) as the checkout in `dir` has it. */
function baselineOf(ours: Contestant, dir: string, label: string): Contestant {
  return {
    ...ours,
    name: "baseline",
    label,
    cmd: ours.cmd.map((part) => part.replace(`${BENCH}`, `${dir}bench/`)),
  };
}

const LOAD_CMD = [DENO, "run", "--allow-net", `${BENCH}load.ts`];

/** Where the C churn generator (bench/churn.c) is built. */
const BUILD_DIR = `${BENCH}.build`;

/**
 * Builds bench/churn.c into bench/.build/ (again when the source is newer)
 * with `cc` or `gcc`; returns the binary, or null when there is no
 * compiler or the build failed (S5 then uses load.ts).
 */
async function buildChurn(notes: string[]): Promise<string | null> {
  const src = `${BENCH}churn.c`;
  const bin = `${BUILD_DIR}/churn`;
  const mtime = async (path: string) => {
    try {
      return (await Deno.stat(path)).mtime?.getTime() ?? 0;
    } catch {
      return -1;
    }
  };
  if (await mtime(bin) >= await mtime(src)) return bin;
  await Deno.mkdir(BUILD_DIR, { recursive: true });
  for (const compiler of ["cc", "gcc"]) {
    const built = await output([compiler, "-O2", "-o", bin, src]);
    if (built !== null) return bin;
  }
  notes.push(
    "bench/churn.c could not be built (no `cc`/`gcc`?): S5 used load.ts.",
  );
  return null;
}

/** A run during which the rest of the machine used more CPU % than this is "disturbed". */
const DISTURBED_CPU = 25;

// ------------------------------------------------------------- processes

const live = new Set<Deno.ChildProcess>();

function killAll(): void {
  for (const child of live) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => {
    killAll();
    Deno.exit(130);
  });
}

/** Collects a child's stdout lines and stderr tail in the background. */
class Proc {
  readonly child: Deno.ChildProcess;
  readonly pid: number;
  lines: string[] = [];
  stderr = "";
  exited: Promise<Deno.CommandStatus>;
  exitStatus: Deno.CommandStatus | null = null;
  #waiters: (() => void)[] = [];

  constructor(cmd: string[], env: Record<string, string> = {}) {
    this.child = new Deno.Command(cmd[0], {
      args: cmd.slice(1),
      cwd: ROOT,
      env: { NO_COLOR: "1", ...env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    live.add(this.child);
    this.pid = this.child.pid;
    this.exited = this.child.status.then((status) => {
      this.exitStatus = status;
      live.delete(this.child);
      this.#wake();
      return status;
    });
    this.#pumpStdout();
    this.#pumpStderr();
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  async #pumpStdout(): Promise<void> {
    let partial = "";
    try {
      for await (
        const chunk of this.child.stdout.pipeThrough(new TextDecoderStream())
      ) {
        partial += chunk;
        const parts = partial.split("\n");
        partial = parts.pop()!;
        this.lines.push(...parts);
        this.#wake();
      }
    } catch {
      // killed
    }
  }

  async #pumpStderr(): Promise<void> {
    try {
      for await (
        const chunk of this.child.stderr.pipeThrough(new TextDecoderStream())
      ) {
        this.stderr = (this.stderr + chunk).slice(-4000);
      }
    } catch {
      // killed
    }
  }

  /** Waits for a stdout line matching `test`; null on exit or timeout. */
  async waitLine(
    test: (line: string) => boolean,
    timeoutMs: number,
    from = 0,
  ): Promise<{ line: string; index: number } | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (let i = from; i < this.lines.length; i++) {
        if (test(this.lines[i])) return { line: this.lines[i], index: i };
      }
      from = this.lines.length;
      if (this.exitStatus !== null) return null;
      const left = deadline - Date.now();
      if (left <= 0) return null;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  alive(): boolean {
    return this.exitStatus === null;
  }

  async kill(): Promise<void> {
    if (this.alive()) {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // gone
      }
    }
    await this.exited;
  }
}

// ------------------------------------------------------------- /proc sampling

let CLK_TCK = 100;

/** CPU seconds (user + system) used so far by `pid`. */
function cpuSeconds(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // Fields 14 and 15 of stat(5); fields[0] is field 3.
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** CPU seconds the whole machine was busy so far (all cores). */
function machineBusySeconds(): number {
  try {
    const line = Deno.readTextFileSync("/proc/stat").split("\n")[0];
    const f = line.trim().split(/\s+/).slice(1, 9).map(Number);
    // user nice system idle iowait irq softirq steal
    return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** Peak resident set size of `pid`, MiB. */
function peakRssMiB(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const m = status.match(/VmHWM:\s+(\d+) kB/);
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

async function output(cmd: string[]): Promise<string | null> {
  try {
    const out = await new Deno.Command(cmd[0], {
      args: cmd.slice(1),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) return null;
    return new TextDecoder().decode(out.stdout).trim();
  } catch {
    return null;
  }
}

// ------------------------------------------------------------- one run

interface RunResult {
  scenario: string;
  contestant: string;
  round: number;
  ok: boolean;
  /** The scenario's unit: msg/s, MB/s, conn/s or deliveries/s. */
  value: number;
  load?: LoadResult;
  /** CPU % of the measured process (server, or client in C scenarios). */
  cpu: number;
  /** Peak RSS of the measured process, MiB. */
  rss: number;
  /** CPU % of the driving process (load.ts, or the fixed server in C). */
  driverCpu: number;
  /**
   * CPU % used by everything else on the machine (other processes, the
   * kernel's network softirqs, this runner) during the measured interval:
   * a high value means the run was disturbed.
   */
  otherCpu: number;
  failure?: string;
}

interface Settings {
  warmup: number;
  duration: number;
  pin: boolean;
  fastServer: Contestant;
  /** The C churn generator when built: S5's load instead of load.ts. */
  churn: string | null;
}

function pinned(cmd: string[], core: number, pin: boolean): string[] {
  return pin ? ["taskset", "-c", String(core), ...cmd] : cmd;
}

async function startServer(
  server: Contestant,
  core: number,
  settings: Settings,
): Promise<{ proc: Proc; port: number }> {
  const proc = new Proc(pinned(server.cmd, core, settings.pin), {
    PORT: "0",
    ...server.env,
  });
  const ready = await proc.waitLine((l) => l.startsWith("READY "), 20_000);
  if (ready === null) {
    await proc.kill();
    throw new Error(
      `${server.name} server did not print READY: ${proc.stderr.trim()}`,
    );
  }
  return { proc, port: Number(ready.line.split(" ")[1]) };
}

async function runOnce(
  scenario: Scenario,
  contestant: Contestant,
  round: number,
  settings: Settings,
): Promise<RunResult> {
  const result: RunResult = {
    scenario: scenario.id,
    contestant: contestant.name,
    round,
    ok: false,
    value: NaN,
    cpu: NaN,
    rss: NaN,
    driverCpu: NaN,
    otherCpu: NaN,
  };
  // S: the contestant server on core 0, load.ts on core 1.
  // C: the contestant client on core 0, the fixed fast server on core 1.
  const serverSide = scenario.side === "server";
  const server = serverSide ? contestant : settings.fastServer;
  let serverProc: Proc | null = null;
  let loadProc: Proc | null = null;
  try {
    const started = await startServer(server, serverSide ? 0 : 1, settings);
    serverProc = started.proc;
    const churn = scenario.args.includes("churn") ? settings.churn : null;
    const loadCmd = [
      ...(!serverSide ? contestant.cmd : churn ? [churn] : LOAD_CMD),
      "--port",
      String(started.port),
      "--warmup",
      String(settings.warmup),
      "--duration",
      String(settings.duration),
      ...scenario.args,
      "--hold",
    ];
    loadProc = new Proc(
      pinned(loadCmd, serverSide ? 1 : 0, settings.pin),
      serverSide ? {} : contestant.env,
    );
    const subject = serverSide ? serverProc : loadProc;
    const driver = serverSide ? loadProc : serverProc;

    // Connecting 1,000 sockets or starting Deno takes a few seconds at most.
    const budget = (settings.warmup + settings.duration) * 1000 + 60_000;
    const start = await loadProc.waitLine((l) => l === "MARK start", budget);
    if (start === null) {
      throw new Error(
        loadProc.alive()
          ? "load did not start in time (hang?)"
          : "load exited before measuring",
      );
    }
    const t0 = performance.now();
    const s0 = cpuSeconds(subject.pid);
    const d0 = cpuSeconds(driver.pid);
    const m0 = machineBusySeconds();
    const end = await loadProc.waitLine(
      (l) => l === "MARK end",
      settings.duration * 1000 + 30_000,
      start.index,
    );
    if (end === null) throw new Error("load did not finish measuring (hang?)");
    const elapsed = (performance.now() - t0) / 1000;
    result.cpu = (cpuSeconds(subject.pid) - s0) / elapsed * 100;
    result.driverCpu = (cpuSeconds(driver.pid) - d0) / elapsed * 100;
    result.otherCpu = (machineBusySeconds() - m0) / elapsed * 100 -
      result.cpu - result.driverCpu;
    result.rss = peakRssMiB(subject.pid);
    const line = await loadProc.waitLine(
      (l) => l.startsWith("RESULT "),
      30_000,
      end.index,
    );
    if (line === null) throw new Error("load printed no RESULT");
    const load = JSON.parse(line.line.slice("RESULT ".length)) as LoadResult;
    result.load = load;
    result.value = scenario.unit === "MB/s" ? load.mbps : load.rate;
    result.ok = true;
    if (!serverProc.alive()) {
      result.ok = false;
      result.failure = `server exited (${serverProc.exitStatus?.code})`;
    } else if (load.count === 0) {
      result.ok = false;
      result.failure = "no messages in the measured interval (hang?)";
    }
  } catch (error) {
    result.failure = error instanceof Error ? error.message : String(error);
  } finally {
    await loadProc?.kill();
    await serverProc?.kill();
  }
  if (!result.ok) {
    const tail = [
      serverProc?.stderr.trim()
        ? `server stderr: ${serverProc.stderr.trim()}`
        : "",
      loadProc?.stderr.trim() ? `load stderr: ${loadProc.stderr.trim()}` : "",
    ].filter(Boolean).join(" | ");
    if (tail) result.failure = `${result.failure} — ${tail.slice(-600)}`;
  }
  return result;
}

// ------------------------------------------------------------- report

function median(xs: number[]): number {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

function fmt(x: number, unit: string): string {
  if (Number.isNaN(x)) return "—";
  if (unit === "MB/s") return x.toFixed(0);
  return Math.round(x).toLocaleString("en-US");
}

function fmt1(x: number): string {
  return Number.isFinite(x) ? x.toFixed(0) : "—";
}

/** Units per CPU-second of the measured process: robust to a busy machine. */
function perCore(r: RunResult): number {
  return r.cpu > 5 ? r.value / (r.cpu / 100) : NaN;
}

function ratio(x: number, base: number): string {
  const q = x / base;
  return Number.isFinite(q) ? `${q.toFixed(2)}×` : "—";
}

function scenarioTable(
  scenario: Scenario,
  contestants: { name: string; label: string }[],
  runs: RunResult[],
): string {
  const mine = runs.filter((r) => r.scenario === scenario.id);
  const baseRuns = mine.filter((r) => r.contestant === "builtin" && r.ok);
  const base = median(baseRuns.map((r) => r.value));
  const baseCore = median(baseRuns.map(perCore));
  const driverName = scenario.side === "server" ? "load CPU %" : "server CPU %";
  const subjectName = scenario.side === "server" ? "server" : "client";
  const rows = [
    `| contestant | median ${scenario.unit} | min–max | vs built-in | per ${subjectName} core-s | vs built-in per core-s | ${subjectName} CPU % | ${subjectName} peak RSS MiB | ${driverName} | other CPU % | max stall ms | errors |`,
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
  ];
  for (const c of contestants) {
    const rs = mine.filter((r) => r.contestant === c.name);
    if (rs.length === 0) continue;
    const ok = rs.filter((r) => r.ok);
    const values = ok.map((r) => r.value);
    const med = median(values);
    const failed = rs.length - ok.length;
    const errors = rs.reduce((n, r) => n + (r.load?.errors ?? 0), 0);
    rows.push(
      `| ${c.label} | ${fmt(med, scenario.unit)} | ${
        values.length
          ? `${fmt(Math.min(...values), scenario.unit)}–${
            fmt(Math.max(...values), scenario.unit)
          }`
          : "—"
      } | ${ratio(med, base)} | ${
        fmt(median(ok.map(perCore)), scenario.unit)
      } | ${ratio(median(ok.map(perCore)), baseCore)} | ${
        fmt1(median(ok.map((r) => r.cpu)))
      } | ${
        fmt1(Math.max(...ok.map((r) => r.rss).filter((x) => !Number.isNaN(x))))
      } | ${fmt1(median(ok.map((r) => r.driverCpu)))} | ${
        fmt1(median(ok.map((r) => r.otherCpu)))
      } | ${
        fmt1(Math.max(
          ...rs.map((r) => r.load?.maxStallMs ?? NaN).filter((x) =>
            !Number.isNaN(x)
          ),
        ))
      } | ${errors}${failed ? `, ${failed} failed run(s)` : ""} |`,
    );
  }
  const failures = mine.filter((r) => !r.ok).map((r) =>
    `- ${r.contestant} round ${r.round}: ${r.failure}`
  );
  const notes = mine.filter((r) => r.load?.note).map((r) =>
    `- ${r.contestant} round ${r.round}: ${r.load!.note}`
  );
  return [
    `### ${scenario.id} — ${scenario.title} (${scenario.unit})`,
    "",
    ...rows,
    ...(notes.length ? ["", "Load notes:", "", ...notes] : []),
    ...(failures.length ? ["", "Failures:", "", ...failures] : []),
    "",
  ].join("\n");
}

function summaryTable(
  scenarios: Scenario[],
  runs: RunResult[],
  serverNames: string[],
  clientNames: string[],
  metric: (r: RunResult) => number = (r) => r.value,
): string {
  const names = [...new Set([...serverNames, ...clientNames])];
  const rows = [
    `| scenario | unit | ${names.join(" | ")} |`,
    `|---|---|${names.map(() => "--:").join("|")}|`,
  ];
  for (const s of scenarios) {
    const mine = runs.filter((r) => r.scenario === s.id && r.ok);
    const base = median(
      mine.filter((r) => r.contestant === "builtin").map(metric),
    );
    const cells = names.map((n) => {
      const rs = mine.filter((r) => r.contestant === n);
      if (rs.length === 0) {
        return runs.some((r) => r.scenario === s.id && r.contestant === n)
          ? "failed"
          : "";
      }
      return ratio(median(rs.map(metric)), base);
    });
    rows.push(`| ${s.id} | ${s.unit} | ${cells.join(" | ")} |`);
  }
  return rows.join("\n");
}

// ------------------------------------------------------------- setup

async function ensureWs(): Promise<string | null> {
  const pkg = `${NODE_DIR}/node_modules/ws/package.json`;
  const version = async () => {
    try {
      return JSON.parse(await Deno.readTextFile(pkg)).version as string;
    } catch {
      return null;
    }
  };
  const have = await version();
  if (have) return have;
  console.error("Installing ws@8 for Node into bench/.node ...");
  await Deno.mkdir(NODE_DIR, { recursive: true });
  const ok = await output([
    "npm",
    "install",
    "--prefix",
    NODE_DIR,
    "--no-audit",
    "--no-fund",
    "--loglevel=error",
    "ws@8",
  ]);
  if (ok === null) return null;
  return await version();
}

/** What a report needs besides the runs; saved with them by `--json`. */
interface Meta {
  header: string[];
  scenarios: string[];
  servers: { name: string; label: string }[];
  clients: { name: string; label: string }[];
}

async function gitDescribe(): Promise<string> {
  const head = await output([
    "git",
    "-C",
    ROOT,
    "rev-parse",
    "--short",
    "HEAD",
  ]);
  if (head === null) return "?";
  const dirty = await output([
    "git",
    "-C",
    ROOT,
    "status",
    "--porcelain",
    "--untracked-files=no",
    "--",
    "mod.ts",
    "src",
  ]);
  return `\`${head}\`${dirty ? " with uncommitted changes in mod.ts/src" : ""}`;
}

function render(meta: Meta, runs: RunResult[]): string {
  const scenarios = SCENARIOS.filter((s) => meta.scenarios.includes(s.id));
  const names = [meta.servers, meta.clients].map((l) => l.map((c) => c.name));
  return [
    "## WebSocket benchmark",
    "",
    ...meta.header.map((h) => `- ${h}`),
    `- disturbed runs (rest of the machine over ${DISTURBED_CPU} % CPU): ${
      runs.filter((r) => r.otherCpu > DISTURBED_CPU).length
    } of ${runs.length}`,
    "",
    "Ratio: median / median of the Deno built-in. Per core-s: the result divided by the CPU the measured process used (units per CPU-second), which holds up much better than raw throughput when something else is using the machine. CPU %: CPU time of the process over the measured interval (100 % = one core). RSS: peak (VmHWM) of the process over the whole run. Other CPU %: the rest of the machine's busy time in the interval (kernel network softirqs, the runner, anything else running): well above ~20 % means the run was disturbed by other work on the machine. Max stall: the longest stretch of the measured interval with nothing completed (sampled every 20 ms; the worst run).",
    "",
    "### Summary: throughput, ratio to the built-in (higher is better)",
    "",
    summaryTable(scenarios, runs, names[0], names[1]),
    "",
    "### Summary: per CPU-second of the measured process, ratio to the built-in",
    "",
    summaryTable(scenarios, runs, names[0], names[1], perCore),
    "",
    ...scenarios.map((s) =>
      scenarioTable(s, s.side === "server" ? meta.servers : meta.clients, runs)
    ),
  ].join("\n");
}

async function emit(
  flags: Record<string, string>,
  meta: Meta,
  runs: RunResult[],
): Promise<void> {
  const report = render(meta, runs);
  console.log(report);
  if (flags.out) {
    await Deno.writeTextFile(flags.out, report + "\n");
    // Keep `deno fmt --check` (deno task check) green for a report in the repo.
    if (flags.out.endsWith(".md")) await output([DENO, "fmt", "-q", flags.out]);
  }
  if (flags.json) {
    await Deno.writeTextFile(
      flags.json,
      JSON.stringify({ meta, runs }, null, 2) + "\n",
    );
  }
}

async function main(): Promise<number> {
  const flags = parseFlags(Deno.args);
  if (flags.report) {
    // Re-render a report from a --json file: no process is started.
    const saved = JSON.parse(await Deno.readTextFile(flags.report));
    await emit({ ...flags, json: "" }, saved.meta, saved.runs);
    return 0;
  }
  const rounds = num(flags, "rounds", 3);
  const duration = num(flags, "duration", 3);
  const warmup = num(flags, "warmup", 1);
  const retries = num(flags, "retry-disturbed", 1);
  const only = flags.only?.split(",").map((s) => s.trim().toUpperCase());
  const wanted = flags.contestants?.split(",").map((s) => s.trim());
  const scenarios = SCENARIOS.filter((s) => !only || only.includes(s.id));
  if (scenarios.length === 0) throw new TypeError("--only matched no scenario");

  CLK_TCK = Number(await output(["getconf", "CLK_TCK"])) || 100;
  const pin = flags["no-pin"] !== "true" &&
    (await output(["taskset", "-c", "0", "true"])) !== null;

  const denoVersion = (await output([DENO, "--version"]))?.split("\n")[0] ??
    "?";
  const nodeVersion = await output(["node", "--version"]);
  const bunVersion = await output(["bun", "--version"]);
  const notes: string[] = [];

  const servers: Contestant[] = [
    SERVERS.builtin,
    SERVERS.ours,
    SERVERS.ours_nowait,
    SERVERS.ours_stream,
    SERVERS.ours_frag1m,
  ];
  let wsVersion: string | null = null;
  const wantNode = !wanted || wanted.includes("ws_node");
  if (wantNode && nodeVersion) {
    wsVersion = await ensureWs();
    if (wsVersion) servers.push(SERVERS.ws_node);
    else notes.push("`ws` could not be installed: Node contestant skipped.");
  } else if (wantNode) {
    notes.push("`node` not found: Node contestant skipped.");
  }
  if (bunVersion) servers.push(SERVERS.bun);
  else notes.push("`bun` not found: Bun contestant skipped.");
  servers.push(SERVERS.bare, SERVERS.bare_text, SERVERS.bare_reuse);
  const clients = [CLIENTS.builtin, CLIENTS.ours, CLIENTS.ours_nowait];
  // `--baseline DIR`: the library as another checkout has it (a commit to
  // compare with, in the same interleaved rounds), as contestant `baseline`.
  if (flags.baseline !== undefined) {
    const dir = flags.baseline.replace(/\/?$/, "/");
    const label = `@silly/websocket at \`${flags.baseline}\` (baseline)`;
    const as = flags["baseline-as"] ?? "ours";
    if (!as.startsWith("ours") || SERVERS[as] === undefined) {
      throw new TypeError(`--baseline-as: no contestant ${as}`);
    }
    servers.push(baselineOf(SERVERS[as], dir, `${label}, as ${as}`));
    clients.push(baselineOf(CLIENTS.ours, dir, label));
  }
  const serverList = servers.filter((c) => !wanted || wanted.includes(c.name));
  const clientList = clients.filter((c) => !wanted || wanted.includes(c.name));
  // The fixed server for the client scenarios: the fastest available.
  const fastServer = flags["fast-server"] !== undefined
    ? SERVERS[flags["fast-server"]]
    : bunVersion
    ? SERVERS.bun
    : wsVersion
    ? SERVERS.ws_node
    : SERVERS.builtin;
  if (fastServer === undefined) {
    throw new Error(`--fast-server: no server ${flags["fast-server"]}`);
  }

  // S5's load: the C generator unless --deno-churn (or no compiler).
  const wantChurn = flags["deno-churn"] !== "true" &&
    scenarios.some((s) => s.args.includes("churn"));
  const churn = wantChurn ? await buildChurn(notes) : null;
  if (churn) {
    notes.push(
      "S5's load generator: bench/churn.c (built into bench/.build/), not load.ts",
    );
  }
  const settings: Settings = { warmup, duration, pin, fastServer, churn };
  // Every server and client process loads the library as it is on disk
  // when it starts: note if it changed under the run.
  const libraryAtStart = await gitDescribe();
  const runs: RunResult[] = [];
  const t0 = Date.now();
  for (const scenario of scenarios) {
    const list = (scenario.side === "server" ? serverList : clientList)
      .filter((c) => !c.scenarios || c.scenarios.includes(scenario.id));
    for (let round = 1; round <= rounds; round++) {
      // Interleaved, rotated so no contestant always goes first.
      const order = list.map((_, i) => list[(i + round - 1) % list.length]);
      for (const c of order) {
        // On a shared machine, rerun a run that something else disturbed
        // and keep the least disturbed attempt.
        let r = await runOnce(scenario, c, round, settings);
        for (
          let retry = 1;
          retry <= retries && r.ok && r.otherCpu > DISTURBED_CPU;
          retry++
        ) {
          console.error(
            `${scenario.id} round ${round} ${c.name}: other CPU ${
              fmt1(r.otherCpu)
            }%, retrying`,
          );
          await sleep(2000);
          const again = await runOnce(scenario, c, round, settings);
          if (again.ok && again.otherCpu < r.otherCpu) r = again;
        }
        runs.push(r);
        console.error(
          `${scenario.id} round ${round} ${c.name.padEnd(8)} ${
            r.ok
              ? `${fmt(r.value, scenario.unit)} ${scenario.unit}`
              : `FAILED: ${r.failure}`
          }  cpu ${fmt1(r.cpu)}%  rss ${fmt1(r.rss)} MiB  driver cpu ${
            fmt1(r.driverCpu)
          }%  other cpu ${fmt1(r.otherCpu)}%${
            (r.load?.maxStallMs ?? 0) >= 100
              ? `  STALL ${r.load!.maxStallMs} ms`
              : ""
          }${r.load?.errors ? `  errors ${r.load.errors}` : ""}`,
        );
        await sleep(200);
      }
    }
  }
  const minutes = ((Date.now() - t0) / 60_000).toFixed(1);
  const libraryAtEnd = await gitDescribe();

  const command = `deno run -A bench/run.ts${
    Deno.args.length ? " " + Deno.args.join(" ") : ""
  }`;
  const cpuModel = (await Deno.readTextFile("/proc/cpuinfo").catch(() => ""))
    .match(/model name\s*:\s*(.*)/)?.[1] ?? "?";
  const meta: Meta = {
    header: [
      `date: ${new Date().toISOString()}`,
      `command: \`${command}\` (${rounds} round(s), ${warmup} s warm-up + ${duration} s measured per run; ${minutes} min in all)`,
      `machine: ${navigator.hardwareConcurrency} cores (\`nproc\`: ${await output(
        ["nproc"],
      )}), ${cpuModel}, Linux ${Deno.osRelease()}`,
      `runtimes: ${denoVersion}; Node ${nodeVersion ?? "not found"} with ws ${
        wsVersion ?? "—"
      }; Bun ${bunVersion ?? "not found"}`,
      `library: ${
        libraryAtStart === libraryAtEnd
          ? libraryAtStart
          : `changed during the run, from ${libraryAtStart} to ${libraryAtEnd}`
      }`,
      `pinning: ${
        pin
          ? "server (or client contestant) on core 0, load generator (or fixed server) on core 1, with `taskset`"
          : "none"
      }`,
      `client scenarios (C*) use the ${fastServer.label} echo server`,
      `disturbed runs retried up to ${retries} time(s), the least disturbed kept`,
      ...notes,
    ],
    scenarios: scenarios.map((s) => s.id),
    servers: serverList.map(({ name, label }) => ({ name, label })),
    clients: clientList.map(({ name, label }) => ({ name, label })),
  };
  await emit(flags, meta, runs);
  return runs.every((r) => r.ok) ? 0 : 1;
}

let code = 1;
try {
  code = await main();
} catch (error) {
  console.error(error);
} finally {
  killAll();
}
Deno.exit(code);
