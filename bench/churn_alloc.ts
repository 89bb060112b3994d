/**
 * What a short connection allocates on the server. A bench server runs under
 * V8's sampling heap profiler (objects that young collections free are
 * counted too) while `bench/churn.c` drives S5's churn at it: connect,
 * upgrade, one 16 B echo, close handshake, 32 at a time. Prints the bytes
 * allocated per connection, and which functions allocated them. Sampled
 * every 256 bytes, so a figure moves by a few per cent from run to run.
 *
 * The generator is the one `deno task bench` builds into `bench/.build/`
 * (or: `cc -O2 -o bench/.build/churn bench/churn.c`).
 *
 * Run: deno run -A bench/churn_alloc.ts [--server ours|bare|builtin]
 *      [--dir CHECKOUT] [--seconds 3] [--top 20]
 *
 * `--dir` profiles another checkout's server (to compare commits).
 */

import { Session } from "node:inspector";
import { num, parseFlags } from "./_common.ts";

const flags = parseFlags(Deno.args);

if (flags.child !== undefined) await child(flags.child, flags.out);
else await parent();

/**
 * The server's process: samples between SIGUSR1 and SIGUSR2, writes the
 * profile to `out`, exits.
 */
async function child(server: string, out: string): Promise<void> {
  const session = new Session();
  session.connect();
  const post = (method: string, params: object = {}) =>
    new Promise<unknown>((resolve, reject) =>
      session.post(
        method,
        params,
        (error: Error | null, result: unknown) =>
          error ? reject(error) : resolve(result),
      )
    );
  await post("HeapProfiler.enable");
  Deno.addSignalListener("SIGUSR1", () => {
    post("HeapProfiler.startSampling", {
      samplingInterval: 256,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
  });
  Deno.addSignalListener("SIGUSR2", async () => {
    const { profile } = await post("HeapProfiler.stopSampling") as {
      profile: unknown;
    };
    Deno.writeTextFileSync(out, JSON.stringify(profile));
    Deno.exit(0);
  });
  await import(server);
}

interface ProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: ProfileNode[];
}

async function parent(): Promise<void> {
  const bench = new URL(".", import.meta.url).pathname;
  const dir = (flags.dir ?? new URL("..", import.meta.url).pathname)
    .replace(/\/$/, "");
  const server = `${dir}/bench/servers/${flags.server ?? "ours"}.ts`;
  const churn = `${bench}.build/churn`;
  const seconds = num(flags, "seconds", 3);
  const out = await Deno.makeTempFile({ suffix: ".heapprofile" });
  const pinned = await hasTaskset();
  const pin = (core: number, cmd: string[]) =>
    pinned ? ["taskset", "-c", `${core}`, ...cmd] : cmd;

  const [cmd, ...args] = pin(0, [
    Deno.execPath(),
    "run",
    "-A",
    import.meta.filename!,
    "--child",
    server,
    "--out",
    out,
  ]);
  const proc = new Deno.Command(cmd, {
    args,
    env: { PORT: "0" },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const port = await readyPort(proc.stdout);
  proc.kill("SIGUSR1");
  await new Promise((resolve) => setTimeout(resolve, 200));
  const [load, ...loadArgs] = pin(1, [
    churn,
    "--port",
    `${port}`,
    "--conns",
    "32",
    "--size",
    "16",
    "--warmup",
    "0",
    "--duration",
    `${seconds}`,
  ]);
  const result = await new Deno.Command(load, { args: loadArgs }).output();
  const text = new TextDecoder().decode(result.stdout);
  const count = Number(/"count":(\d+)/.exec(text)?.[1] ?? NaN);
  proc.kill("SIGUSR2");
  await proc.status;
  const profile = JSON.parse(await Deno.readTextFile(out)) as {
    head: ProfileNode;
  };
  await Deno.remove(out);

  const bytes = new Map<string, number>();
  let total = 0;
  const walk = (node: ProfileNode) => {
    const { functionName, url, lineNumber } = node.callFrame;
    const where = `${functionName || "(anonymous)"} ${url.split("/").pop()}:${
      lineNumber + 1
    }`;
    bytes.set(where, (bytes.get(where) ?? 0) + node.selfSize);
    total += node.selfSize;
    node.children.forEach(walk);
  };
  walk(profile.head);
  console.log(`server: ${server}`);
  console.log(`connections: ${count} in ${seconds} s`);
  console.log(`allocated: ${Math.round(total / count)} B per connection`);
  const top = [...bytes].sort((a, b) => b[1] - a[1]).slice(
    0,
    num(flags, "top", 20),
  );
  for (const [where, size] of top) {
    console.log(`${String(Math.round(size / count)).padStart(7)} B  ${where}`);
  }
}

/** Reads the server's stdout up to `READY <port>`, then drains the rest. */
async function readyPort(stdout: ReadableStream<Uint8Array>): Promise<number> {
  const reader = stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the server exited before READY: ${seen}`);
    seen += value;
    const match = /READY (\d+)/.exec(seen);
    if (match !== null) {
      (async () => {
        while (!(await reader.read()).done) {
          // Discard.
        }
      })();
      return Number(match[1]);
    }
  }
}

async function hasTaskset(): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("taskset", {
      args: ["-c", "0", "true"],
    }).output();
    return success;
  } catch {
    return false;
  }
}
