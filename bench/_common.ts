/**
 * Helpers shared by the load generator and the client contestants: flag
 * parsing, the warm-up/measure timeline and the lines `run.ts` reads.
 *
 * Every load process prints `MARK start` when the measured interval begins,
 * `MARK end` when it ends (run.ts samples CPU of the processes at both) and
 * then one `RESULT <json>` line with a {@linkcode LoadResult}.
 *
 * @module
 */

/** What one load process measured. */
export interface LoadResult {
  /** Completed units in the measured interval: messages, connections or deliveries. */
  count: number;
  /** Payload bytes received in the measured interval. */
  bytes: number;
  /** Length of the measured interval, in seconds. */
  seconds: number;
  /** `count / seconds`. */
  rate: number;
  /** Payload bytes per second / 10^6. */
  mbps: number;
  /** Unexpected closes, failed handshakes, timeouts (whole run). */
  errors: number;
  /** Connections that were open (or workers, for churn). */
  connections: number;
  /** Longest time in the measured interval with no unit completed, ms. */
  maxStallMs?: number;
  /** Free-form details. */
  note?: string;
}

/** Parses `--name value` and `--flag` arguments. */
export function parseFlags(args: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (!arg.startsWith("--")) {
      throw new TypeError(`Unexpected argument ${arg}`);
    }
    const eq = arg.indexOf("=");
    if (eq > 0) {
      out[arg.slice(2, eq)] = arg.slice(eq + 1);
    } else if (i + 1 < args.length && !args[i + 1].startsWith("--")) {
      out[arg.slice(2)] = args[++i];
    } else {
      out[arg.slice(2)] = "true";
    }
  }
  return out;
}

/** A numeric flag with a default. */
export function num(
  flags: Record<string, string>,
  name: string,
  fallback: number,
): number {
  const value = flags[name];
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n)) throw new TypeError(`--${name}: not a number`);
  return n;
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Writes all of `bytes` to `conn`. */
export async function writeAll(
  conn: Deno.Conn,
  bytes: Uint8Array,
): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    offset += await conn.write(
      offset === 0 ? bytes : bytes.subarray(offset),
    );
  }
}

/**
 * A UTF-8 string of exactly `size` bytes, mostly ASCII with some two- and
 * three-byte characters (so validation has real work to do).
 */
export function utf8Text(size: number): string {
  const pattern = "Grüße, wörld — ünïcode ✓ text ";
  const encoder = new TextEncoder();
  let text = "";
  let bytes = 0;
  for (let i = 0;; i++) {
    const ch = pattern[i % pattern.length];
    const n = encoder.encode(ch).length;
    if (bytes + n > size) break;
    text += ch;
    bytes += n;
  }
  return text + "x".repeat(size - bytes);
}

/** Deterministic pseudo-random bytes. */
export function binaryPayload(size: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = 0x9e3779b9;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * One masked client frame, written by hand rather than by the library under
 * test (a fixed key: the servers cannot tell).
 */
export function maskedFrame(
  fin: boolean,
  opcode: number,
  payload: Uint8Array,
): Uint8Array {
  const len = payload.length;
  const ext = len < 126 ? 0 : len < 0x10000 ? 2 : 8;
  const frame = new Uint8Array(2 + ext + 4 + len);
  frame[0] = (fin ? 0x80 : 0) | opcode;
  let o = 2;
  if (ext === 0) frame[1] = 0x80 | len;
  else if (ext === 2) {
    frame[1] = 0x80 | 126;
    frame[2] = len >>> 8;
    frame[3] = len & 0xff;
    o = 4;
  } else {
    frame[1] = 0x80 | 127;
    new DataView(frame.buffer).setBigUint64(2, BigInt(len));
    o = 10;
  }
  const key = [0x37, 0xfa, 0x21, 0x3d];
  frame.set(key, o);
  o += 4;
  for (let i = 0; i < len; i++) frame[o + i] = payload[i] ^ key[i & 3];
  return frame;
}

/**
 * Warm up, then measure `counter` over `duration` seconds, printing the
 * marks run.ts samples CPU at. Returns the deltas.
 */
export async function measure(
  warmup: number,
  duration: number,
  counter: () => { count: number; bytes: number },
): Promise<
  { count: number; bytes: number; seconds: number; maxStallMs: number }
> {
  await sleep(warmup * 1000);
  const a = counter();
  const t0 = performance.now();
  console.log("MARK start");
  // Watch for stalls: the longest stretch with no progress at all.
  let last = a.count;
  let lastProgress = t0;
  let maxStallMs = 0;
  const watch = setInterval(() => {
    const now = performance.now();
    const c = counter().count;
    if (c !== last) {
      last = c;
      lastProgress = now;
    } else {
      maxStallMs = Math.max(maxStallMs, now - lastProgress);
    }
  }, 20);
  await sleep(duration * 1000);
  clearInterval(watch);
  const b = counter();
  const end = performance.now();
  if (b.count === last) maxStallMs = Math.max(maxStallMs, end - lastProgress);
  const seconds = (end - t0) / 1000;
  console.log("MARK end");
  return {
    count: b.count - a.count,
    bytes: b.bytes - a.bytes,
    seconds,
    maxStallMs: Math.round(maxStallMs),
  };
}

/**
 * Prints the `RESULT` line and exits (open connections are dropped). With
 * `--hold` (run.ts passes it) the process stays alive, idle, until the
 * runner has read /proc and kills it (at most 60 s).
 */
export function report(result: LoadResult): Promise<never> {
  console.log(`RESULT ${JSON.stringify(result)}`);
  if (!Deno.args.includes("--hold")) Deno.exit(0);
  setTimeout(() => Deno.exit(0), 60_000);
  return new Promise<never>(() => {});
}
