/**
 * The long fuzz run (`deno task fuzz`): mutation-based random inputs for
 * the frame parser, the protocol state machine and the handshake parsers,
 * for a fixed time, checking invariants. Prints how many inputs each
 * target ran and what it found; findings are saved under fuzz/findings/.
 *
 * Targets:
 *
 * - `frame`: {@linkcode FrameDecoder} with random limits and mask rules,
 *   fed in random chunks. Only `FrameError` may be thrown, with 1002 or
 *   1009; every frame it returns obeys RFC 6455 5.2-5.5 and the limits;
 *   feeding whole and in chunks gives the same frames and error.
 * - `protocol`: `Protocol` driven like Socket's read loop (see
 *   `_gen.ts`), both sides, random limits: `checkInvariants` (never throws,
 *   fails with 1002/1007/1009 and sends the same code, one close, pongs
 *   for pings...), and the same outcome whole and chunked.
 * - `handshake`: `parseRequestHead`, `validateUpgrade`,
 *   `parseResponseHead` on mutated heads: never throw; a request gets a
 *   result or 400, an upgrade a result or 400/405/426.
 * - `accept`: the whole server handshake, `accept()` over an in-memory
 *   connection that replays the input in random reads then EOF: never
 *   rejects or hangs, answers 101 (with the right accept key), 400, 426 or
 *   431, or nothing at EOF; a socket it makes ends with `closed` settled.
 *
 * Feedback: inputs whose outcome has a new signature (close code and
 * reason, or status and message, with digits masked) join the corpus.
 *
 * Usage: deno run --allow-read --allow-write=fuzz/findings fuzz/run.ts [minutes] [--seed=N] [--targets=frame,protocol,handshake,accept]
 *
 * @module
 */

import { FrameError } from "../src/frame.ts";
import { FrameDecoder } from "../src/frame_decoder.ts";
import { acceptKey, validateUpgrade } from "../src/handshake.ts";
import { parseRequestHead, parseResponseHead } from "../src/http.ts";
import { accept } from "../src/server.ts";
import type { Message } from "../src/protocol.ts";
import {
  brief,
  checkInvariants,
  concatBytes,
  describe,
  driveProtocol,
  hex,
  latin1Bytes,
  latin1String,
  mutate,
  mutateHead,
  type Outcome,
  Random,
  sameMessage,
  sameOutcome,
  validRequest,
  validStream,
} from "./_gen.ts";

// -- Arguments --

const args = Deno.args.filter((a) => !a.startsWith("--"));
const flag = (name: string) =>
  Deno.args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const minutes = Number(args[0] ?? 1);
if (!(minutes > 0)) {
  console.error("Usage: fuzz/run.ts [minutes] [--seed=N] [--targets=...]");
  Deno.exit(2);
}
const seed = Number(flag("seed") ?? Date.now() % 0x1_0000_0000);
const ALL_TARGETS = ["frame", "protocol", "handshake", "accept"] as const;
type Target = typeof ALL_TARGETS[number];
const targets = (flag("targets")?.split(",") ?? [...ALL_TARGETS]) as Target[];
for (const t of targets) {
  if (!ALL_TARGETS.includes(t)) {
    console.error(`Unknown target ${t}; known: ${ALL_TARGETS.join(", ")}`);
    Deno.exit(2);
  }
}
const findingsDir = new URL("./findings/", import.meta.url);

const rng = new Random(seed);

// -- Bookkeeping --

interface Finding {
  target: Target;
  problem: string;
  count: number;
  input: Uint8Array;
}

const stats = new Map<Target, { inputs: number; ms: number }>();
const signatures = new Map<Target, Map<string, number>>();
const findings = new Map<string, Finding>();
for (const t of targets) {
  stats.set(t, { inputs: 0, ms: 0 });
  signatures.set(t, new Map());
}

/** Records an outcome signature; returns whether it is new. */
function seen(target: Target, signature: string): boolean {
  const sigs = signatures.get(target)!;
  // Masks what the peer controls in a message (quoted text, names after
  // "header" or "received", numbers): the class of outcome remains.
  const masked = signature.replace(/"(?:[^"\\]|\\.)*"?/g, "S")
    .replace(/\b(header|received|version:?) \S+/g, "$1 X")
    .replace(/\d+/g, "N").slice(0, 160);
  const count = sigs.get(masked) ?? 0;
  sigs.set(masked, count + 1);
  return count === 0;
}

function report(target: Target, problem: string, input: Uint8Array): void {
  const key = `${target}: ${problem.replace(/\d+/g, "N").slice(0, 200)}`;
  const finding = findings.get(key);
  if (finding) {
    finding.count++;
    return;
  }
  findings.set(key, { target, problem, count: 1, input: input.slice() });
  console.log(`FINDING ${target}: ${problem}\n  input: ${hex(input, 96)}`);
}

// -- Corpora --

const MAX_CORPUS = 4000;

interface Entry {
  bytes: Uint8Array;
  frameStarts: number[];
  client: boolean;
}

const frameCorpus: Entry[] = [];
for (let i = 0; i < 200; i++) {
  const client = i % 2 === 1;
  const s = validStream(rng, {
    masked: !client,
    maxMessages: 6,
    maxSize: rng.pick([300, 3000, 70_000]),
  });
  frameCorpus.push({ bytes: s.bytes, frameStarts: s.frameStarts, client });
}
const headCorpus: string[] = [];
for (let i = 0; i < 100; i++) headCorpus.push(validRequest(rng, i % 4 === 0));
const responseSeeds = [
  "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
  "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
  "HTTP/1.0 101\r\n\r\n",
];

function frameInput(): Entry {
  const base = rng.pick(frameCorpus);
  if (rng.chance(0.05)) {
    return {
      bytes: rng.bytes(rng.range(1, 64)),
      frameStarts: [],
      client: base.client,
    };
  }
  let bytes = base.bytes;
  for (let n = rng.range(1, 4); n > 0; n--) {
    bytes = mutate(rng, bytes, base.frameStarts);
  }
  return { bytes, frameStarts: base.frameStarts, client: base.client };
}

function keep(entry: Entry): void {
  if (frameCorpus.length < MAX_CORPUS) frameCorpus.push(entry);
  else frameCorpus[rng.int(MAX_CORPUS)] = entry;
}

// -- Target: frame --

const LIMITS = [Infinity, 16 * 1024 * 1024, 70_000, 1000, 125, 0];

interface FrameRun {
  frames: string[];
  error: string | null;
}

function runDecoder(
  input: Uint8Array,
  options: {
    requireMask: boolean;
    maxFrameSize: number;
    maxMessageSize: number;
    allowRsv1: boolean;
    assembleBinary: boolean;
  },
  chunked: boolean,
): FrameRun | string {
  const decoder = new FrameDecoder(options);
  const frames: string[] = [];
  let pos = 0;
  let fragmented = false;
  let messageSize = 0;
  // With assembleBinary: the fragments so far, to check the whole message.
  let parts: number[] = [];
  try {
    while (pos < input.length) {
      const n = chunked ? 1 + rng.int(40) : input.length;
      const chunk = input.slice(pos, pos + n);
      pos += chunk.length;
      // feed()/next() rather than push(): push() throws away the frames
      // of a chunk that ends in an error, and they are compared below.
      decoder.feed(chunk);
      while (decoder.next()) {
        const { fin, rsv1, opcode, payload } = decoder;
        // RFC 6455 5.2, 5.4, 5.5 and the limits, on what came out.
        if (![0, 1, 2, 8, 9, 10].includes(opcode)) {
          return `returned a frame with opcode ${opcode}`;
        }
        if (payload.length !== decoder.payloadLength) {
          return `payload of ${payload.length} bytes, declared ${decoder.payloadLength}`;
        }
        if (opcode >= 8) {
          if (!fin || payload.length > 125 || rsv1) {
            return `returned a bad control frame (fin ${fin}, ${payload.length} bytes, rsv1 ${rsv1})`;
          }
        } else {
          if (rsv1 && (!options.allowRsv1 || opcode === 0)) {
            return "returned RSV1 where it is not allowed";
          }
          if (payload.length > options.maxFrameSize) {
            return "returned a frame over maxFrameSize";
          }
          if (opcode === 0 && !fragmented) {
            return "returned a continuation with no message";
          }
          if (opcode !== 0 && fragmented) {
            return "returned a new message inside a fragmented one";
          }
          messageSize = (opcode === 0 ? messageSize : 0) + payload.length;
          if (messageSize > options.maxMessageSize) {
            return "returned a message over maxMessageSize";
          }
          fragmented = !fin;
          if (decoder.assembled) {
            if (opcode !== 0) parts = [];
            for (const byte of payload) parts.push(byte);
            const message = decoder.message;
            if (fin !== (message !== null)) {
              return `assembled message ${
                message ? "before" : "missing at"
              } the last fragment`;
            }
            if (
              message !== null &&
              (message.length !== parts.length ||
                message.some((byte, i) => byte !== parts[i]))
            ) return "assembled message differs from its fragments";
          } else if (decoder.message !== null) {
            return "a message from a frame that was not assembled";
          }
        }
        frames.push(
          `${fin ? 1 : 0}${rsv1 ? 1 : 0}${opcode}:${hex(payload, 16)}`,
        );
      }
    }
  } catch (error) {
    if (!(error instanceof FrameError)) return `threw ${describe(error)}`;
    if (error.closeCode !== 1002 && error.closeCode !== 1009) {
      return `FrameError with code ${error.closeCode}`;
    }
    return { frames, error: `${error.closeCode} ${error.message}` };
  }
  return { frames, error: null };
}

function fuzzFrame(): void {
  const entry = frameInput();
  const options = {
    requireMask: rng.chance(0.9) ? !entry.client : entry.client,
    maxFrameSize: rng.pick(LIMITS) || 1,
    maxMessageSize: rng.pick(LIMITS) || 1,
    allowRsv1: rng.chance(0.3),
    assembleBinary: rng.chance(0.5),
  };
  const whole = runDecoder(entry.bytes, options, false);
  if (typeof whole === "string") return report("frame", whole, entry.bytes);
  const chunked = runDecoder(entry.bytes, options, true);
  if (typeof chunked === "string") {
    return report("frame", `chunked: ${chunked}`, entry.bytes);
  }
  if (
    whole.error !== chunked.error ||
    whole.frames.join() !== chunked.frames.join()
  ) {
    return report(
      "frame",
      `whole and chunked differ: ${whole.error} vs ${chunked.error}`,
      entry.bytes,
    );
  }
  if (seen("frame", whole.error ?? `ok ${whole.frames.length > 0}`)) {
    keep(entry);
  }
}

// -- Target: protocol --

function signature(outcome: Outcome): string {
  const last = outcome.messages.at(-1);
  if (last?.type === "close") {
    // A clean close's reason is the peer's text: only its code counts.
    return outcome.transport[0]
      ? `fail ${last.code} ${last.reason}`
      : `clean ${last.code}`;
  }
  return `open ${Math.min(outcome.messages.length, 3)}`;
}

function fuzzProtocol(): void {
  const entry = frameInput();
  const maxMessageSize = rng.pick([16 * 1024 * 1024, 70_000, 1000, 1]);
  const maxFrameSize = rng.chance(0.5) ? maxMessageSize : rng.pick(LIMITS) || 1;
  const whole = driveProtocol(entry.bytes, {
    client: entry.client,
    maxMessageSize,
    maxFrameSize,
    readSize: entry.bytes.length + 1,
  });
  const problem = checkInvariants(whole, maxMessageSize);
  if (problem !== null) return report("protocol", problem, entry.bytes);
  const chunked = driveProtocol(entry.bytes, {
    client: entry.client,
    maxMessageSize,
    maxFrameSize,
    readSize: 1 + rng.int(rng.pick([4, 64, 4096])),
    rng,
    directMinimum: rng.chance(0.5) ? 1 + rng.int(256) : 0,
    scribble: true,
  });
  const chunkedProblem = checkInvariants(chunked, maxMessageSize);
  if (chunkedProblem !== null) {
    return report("protocol", `chunked: ${chunkedProblem}`, entry.bytes);
  }
  const differs = sameOutcome(whole, chunked);
  if (differs !== null) {
    return report(
      "protocol",
      `whole and chunked differ: ${differs}`,
      entry.bytes,
    );
  }
  if (seen("protocol", signature(whole))) keep(entry);
}

// -- Target: handshake --

function headOf(bytes: Uint8Array): Uint8Array {
  for (let j = 0; j + 3 < bytes.length; j++) {
    if (
      bytes[j] === 13 && bytes[j + 1] === 10 && bytes[j + 2] === 13 &&
      bytes[j + 3] === 10
    ) return bytes.subarray(0, j + 4);
  }
  return concatBytes(bytes, new Uint8Array([13, 10, 13, 10]));
}

function fuzzHandshake(): void {
  if (rng.chance(0.02)) {
    // Unmutated valid requests, some with UTF-8 header values (obs-text),
    // must upgrade.
    const valid = latin1Bytes(validRequest(rng, rng.chance(0.5)));
    const parsed = parseRequestHead(valid);
    const result = "status" in parsed ? parsed : validateUpgrade(parsed);
    if ("status" in result) {
      report(
        "handshake",
        `valid request rejected: ${result.status} ${result.message}`,
        valid,
      );
    }
  }
  let text = rng.pick(headCorpus);
  for (let n = rng.range(1, 4); n > 0; n--) text = mutateHead(rng, text);
  const bytes = rng.chance(0.03)
    ? rng.bytes(rng.range(0, 300))
    : latin1Bytes(text);
  // As the server calls it: the bytes up to and with the first blank line.
  const head = headOf(bytes);
  let sig: string;
  try {
    const parsed = parseRequestHead(head);
    if ("status" in parsed) {
      if (parsed.status !== 400) {
        return report(
          "handshake",
          `parseRequestHead() answered ${parsed.status}`,
          head,
        );
      }
      sig = `400 ${parsed.message}`;
    } else {
      const upgrade = validateUpgrade(parsed);
      if ("status" in upgrade) {
        if (![400, 405, 426].includes(upgrade.status)) {
          return report(
            "handshake",
            `validateUpgrade() answered ${upgrade.status}`,
            head,
          );
        }
        sig = `${upgrade.status} ${upgrade.message}`;
      } else sig = "101";
    }
  } catch (error) {
    return report("handshake", `request: threw ${describe(error)}`, head);
  }
  if (seen("handshake", sig) && headCorpus.length < MAX_CORPUS) {
    headCorpus.push(latin1String(head));
  }
  // The client's parser, on mutated responses.
  let response = rng.pick(responseSeeds);
  for (let n = rng.range(1, 3); n > 0; n--) {
    response = mutateHead(rng, response);
  }
  const responseHead = headOf(latin1Bytes(response));
  try {
    const parsed = parseResponseHead(responseHead);
    if (typeof parsed !== "string" && !(parsed.status >= 0)) {
      report("handshake", `response: status ${parsed.status}`, responseHead);
    }
  } catch (error) {
    report("handshake", `response: threw ${describe(error)}`, responseHead);
  }
}

// -- Target: accept --

/** A Deno.Conn that replays `input` in random reads, then EOF. */
class ReplayConn {
  written: Uint8Array[] = [];
  closed = false;
  #input: Uint8Array;
  #pos = 0;
  #rng: Random;
  readonly localAddr = { transport: "tcp", hostname: "127.0.0.1", port: 80 };
  readonly remoteAddr = {
    transport: "tcp",
    hostname: "127.0.0.1",
    port: 40000,
  };

  constructor(input: Uint8Array, rng: Random) {
    this.#input = input;
    this.#rng = rng;
  }

  read(p: Uint8Array): Promise<number | null> {
    if (this.closed) {
      return Promise.reject(new Deno.errors.BadResource("closed"));
    }
    if (this.#pos >= this.#input.length) return Promise.resolve(null);
    const n = Math.min(
      p.length,
      1 + this.#rng.int(this.#rng.pick([8, 512, 65536])),
      this.#input.length - this.#pos,
    );
    p.set(this.#input.subarray(this.#pos, this.#pos + n));
    this.#pos += n;
    return Promise.resolve(n);
  }

  write(p: Uint8Array): Promise<number> {
    if (this.closed) {
      return Promise.reject(new Deno.errors.BadResource("closed"));
    }
    this.written.push(p.slice());
    return Promise.resolve(p.length);
  }

  closeWrite(): Promise<void> {
    return Promise.resolve();
  }

  close(): void {
    if (this.closed) throw new Deno.errors.BadResource("closed");
    this.closed = true;
  }
}

const ACCEPT_STATUSES = [101, 400, 426, 431];

async function fuzzAccept(): Promise<void> {
  let text = rng.pick(headCorpus);
  for (let n = rng.range(0, 3); n > 0; n--) text = mutateHead(rng, text);
  let bytes = latin1Bytes(text);
  // Often with frames after the head, as in the same packet.
  if (rng.chance(0.5)) {
    const entry = rng.pick(frameCorpus.filter((e) => !e.client));
    bytes = concatBytes(bytes, entry.bytes.subarray(0, 4096));
  }
  const conn = new ReplayConn(bytes, rng);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<"hang">((resolve) => {
    timer = setTimeout(() => resolve("hang"), 2000);
  });
  try {
    const sock = await Promise.race([
      accept(conn as unknown as Deno.Conn, {
        maxHandshakeSize: rng.pick([16 * 1024, 512]),
        onError: (e) => report("accept", `onError: ${describe(e)}`, bytes),
      }),
      hang,
    ]);
    if (sock === "hang") return report("accept", "accept() hung", bytes);
    const response = new TextDecoder("latin1").decode(
      concatBytes(...conn.written),
    );
    const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(response)?.[1] ?? 0);
    if (sock !== null) {
      if (status !== 101) {
        return report("accept", `a socket after status ${status}`, bytes);
      }
      const key = /\r\nSec-WebSocket-Key:[ \t]*(\S+)/i.exec(
        latin1String(bytes),
      )?.[1];
      const sent = /\r\nSec-WebSocket-Accept: (\S+)\r\n/.exec(response)?.[1];
      if (key !== undefined && sent !== await acceptKey(key)) {
        report("accept", "wrong Sec-WebSocket-Accept", bytes);
      }
      // What the socket reads must be what the protocol model decodes from
      // the bytes after the head, plus a 1006 close at EOF if none came.
      const messages: Message[] = [];
      const reading = (async () => {
        for await (const m of sock) messages.push(m);
      })();
      const closed = await Promise.race([sock.closed, hang]);
      if (closed === "hang") return report("accept", "closed hung", bytes);
      await reading;
      const rest = bytes.subarray(headOf(bytes).length);
      const model = driveProtocol(rest, {
        client: false,
        readSize: rest.length,
      });
      const expected = [...model.messages];
      if (expected.at(-1)?.type !== "close") {
        expected.push({ type: "close", code: 1006, reason: "" });
      }
      const same = messages.length === expected.length &&
        messages.every((m, i) => sameMessage(m, expected[i]));
      if (!same) {
        report(
          "accept",
          `socket read ${messages.map(brief).join(", ")}; model ${
            expected.map(brief).join(", ")
          }`,
          bytes,
        );
      }
      if (closed.code !== (expected.at(-1) as { code: number }).code) {
        report("accept", `closed with ${closed.code}`, bytes);
      }
      if (!conn.closed) report("accept", "socket ended, conn open", bytes);
      seen("accept", `101 closed ${closed.code}`);
    } else {
      if (status !== 0 && !ACCEPT_STATUSES.includes(status)) {
        return report("accept", `answered ${status}`, bytes);
      }
      if (!conn.closed) report("accept", `null (${status}), conn open`, bytes);
      if (seen("accept", `${status} ${response.split("\r\n\r\n")[1] ?? ""}`)) {
        if (headCorpus.length < MAX_CORPUS) headCorpus.push(text);
      }
    }
  } catch (error) {
    report("accept", `rejected: ${describe(error)}`, bytes);
  } finally {
    clearTimeout(timer);
  }
}

// -- Main loop --

const runners: Record<Target, () => void | Promise<void>> = {
  frame: fuzzFrame,
  protocol: fuzzProtocol,
  handshake: fuzzHandshake,
  accept: fuzzAccept,
};

const deadline = performance.now() + minutes * 60_000;
let lastReport = performance.now();
console.log(
  `fuzzing ${targets.join(", ")} for ${minutes} min, seed ${seed}`,
);
while (performance.now() < deadline) {
  for (const target of targets) {
    const stat = stats.get(target)!;
    const start = performance.now();
    for (let i = 0; i < 100; i++) {
      const result = runners[target]();
      if (result instanceof Promise) await result;
      stat.inputs++;
    }
    stat.ms += performance.now() - start;
  }
  if (performance.now() - lastReport > 30_000) {
    lastReport = performance.now();
    console.log(
      `  ${
        [...stats].map(([t, s]) => `${t} ${s.inputs}`).join(", ")
      }; findings ${findings.size}`,
    );
  }
}

// -- Summary --

let saved = 0;
if (findings.size > 0) {
  try {
    await Deno.mkdir(findingsDir, { recursive: true });
    for (const finding of findings.values()) {
      const name = `${finding.target}-${saved++}.bin`;
      await Deno.writeFile(new URL(name, findingsDir), finding.input);
    }
  } catch (error) {
    console.log(`(could not save findings: ${describe(error)})`);
  }
}
const summary = {
  seed,
  minutes,
  total: [...stats.values()].reduce((n, s) => n + s.inputs, 0),
  targets: Object.fromEntries(
    [...stats].map(([t, s]) => [t, {
      inputs: s.inputs,
      perSecond: Math.round(s.inputs / (s.ms / 1000)),
      outcomes: signatures.get(t)!.size,
    }]),
  ),
  corpus: { frames: frameCorpus.length, heads: headCorpus.length },
  findings: [...findings.values()].map((f) => ({
    target: f.target,
    problem: f.problem,
    count: f.count,
    input: hex(f.input, 48),
  })),
};
console.log(`RESULT ${JSON.stringify(summary, null, 2)}`);
const top = (t: Target) =>
  [...signatures.get(t)!].sort((a, b) => b[1] - a[1]).slice(0, 12);
for (const t of targets) {
  console.log(`\n${t}: most common outcomes`);
  for (const [sig, n] of top(t)) {
    console.log(`  ${String(n).padStart(8)}  ${sig}`);
  }
}
Deno.exit(findings.size > 0 ? 1 : 0);
