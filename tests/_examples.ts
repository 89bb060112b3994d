/**
 * Runs the scripts in examples/ as subprocesses for tests/examples_test.ts.
 * Shared basics (servers, `freePort`, `readData`, `lines`) are in
 * `_helpers.ts`.
 *
 * Every process started here is killed and reaped, and its pipes are read to
 * the end, so Deno's resource and op sanitizers stay on.
 *
 * @module
 */

import type { Socket } from "../mod.ts";
import { settlesWithin, stopChild, TIMEOUT } from "./_helpers.ts";

const LISTENING = /listening on (wss?):\/\/127\.0\.0\.1:(\d+)/;

/** A running example script. */
export class ExampleProcess {
  readonly name: string;
  readonly child: Deno.ChildProcess;
  #stdout = "";
  #stderr = "";
  #exited = false;
  #drained = false;
  #status: Promise<Deno.CommandStatus>;
  #pumps: Promise<void>;
  #waiters = new Set<() => void>();

  constructor(name: string, child: Deno.ChildProcess) {
    this.name = name;
    this.child = child;
    this.#status = child.status.then((status) => {
      this.#exited = true;
      return status;
    });
    this.#pumps = Promise.all([
      this.#pump(child.stdout, (text) => this.#stdout += text),
      this.#pump(child.stderr, (text) => this.#stderr += text),
    ]).then(() => {
      this.#drained = true;
    });
  }

  /** Everything the script printed to stdout so far. */
  get stdout(): string {
    return this.#stdout;
  }

  /** Everything the script printed to stderr so far. */
  get stderr(): string {
    return this.#stderr;
  }

  async #pump(
    stream: ReadableStream<Uint8Array>,
    append: (text: string) => void,
  ): Promise<void> {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      append(text);
      for (const wake of this.#waiters) wake();
    }
  }

  /**
   * Waits until stdout matches `pattern` and returns the match.
   *
   * @throws {Error} when the script exits or `timeout` ms pass first
   */
  waitFor(
    pattern: string | RegExp,
    timeout: number = TIMEOUT,
  ): Promise<RegExpMatchArray> {
    const regexp = typeof pattern === "string"
      ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
      : pattern;
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      const check = () => {
        const match = this.#stdout.match(regexp);
        if (match) {
          done();
          resolve(match);
        } else if (this.#drained) {
          done();
          reject(this.#failure(`closed stdout before printing ${regexp}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(this.#failure(`did not print ${regexp} within ${timeout} ms`));
      }, timeout);
      this.#waiters.add(check);
      this.#pumps.then(check);
      check();
    });
  }

  /**
   * Waits for the script to exit on its own.
   *
   * @returns its exit status
   * @throws {Error} when it is still running after `timeout` ms (it is
   *   killed first)
   */
  async exited(timeout: number = TIMEOUT): Promise<Deno.CommandStatus> {
    if (!await settlesWithin(this.#status, timeout)) {
      await this.stop();
      throw this.#failure(`did not exit within ${timeout} ms`);
    }
    await this.#pumps;
    return await this.#status;
  }

  /**
   * Sends SIGTERM (SIGKILL if that is ignored for 3 s), then reaps the
   * process and drains its pipes.
   *
   * @returns its exit status
   */
  async stop(): Promise<Deno.CommandStatus> {
    if (!this.#exited) await stopChild(this.child, 3_000);
    await this.#pumps;
    return await this.#status;
  }

  #failure(what: string): Error {
    return new Error(
      `${this.name} ${what}\n--- stdout ---\n${this.#stdout}` +
        `\n--- stderr ---\n${this.#stderr}`,
    );
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** Options for {@linkcode startExample}. */
export interface StartOptions {
  /** Command-line arguments for the script. */
  args?: string[];
  /** Extra environment variables (PORT is "0" unless given). */
  env?: Record<string, string>;
}

/** Starts `examples/<name>` with net, read and env permissions. */
export function startExample(
  name: string,
  options: StartOptions = {},
): ExampleProcess {
  const path = new URL(`../examples/${name}`, import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-env",
      path,
      ...(options.args ?? []),
    ],
    env: { PORT: "0", NO_COLOR: "1", ...options.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return new ExampleProcess(name, child);
}

/** A server example that has printed its listening line. */
export interface ServerExample {
  process: ExampleProcess;
  port: number;
  /** `ws://127.0.0.1:<port>` (or `wss://`). */
  url: string;
}

/**
 * Starts a server example on port 0 and waits for its
 * "listening on ws://127.0.0.1:<port>" line.
 */
export async function startServerExample(
  name: string,
  options: StartOptions = {},
): Promise<ServerExample> {
  const process = startExample(name, options);
  try {
    const [, scheme, port] = await process.waitFor(LISTENING);
    return {
      process,
      port: Number(port),
      url: `${scheme}://127.0.0.1:${port}`,
    };
  } catch (err) {
    await process.stop();
    throw err;
  }
}

/** Output and status of a client example that ran to completion. */
export interface ClientRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a client example with `url` as its argument until it exits. */
export async function runClientExample(
  name: string,
  url: string,
  options: StartOptions & { timeout?: number } = {},
): Promise<ClientRun> {
  const process = startExample(name, {
    ...options,
    args: [url, ...(options.args ?? [])],
  });
  const { code } = await process.exited(options.timeout);
  return { code, stdout: process.stdout, stderr: process.stderr };
}

/** An echo handler like examples/echo_server.ts: text gets "Echo: ". */
export async function echoHandler(sock: Socket): Promise<void> {
  for await (const msg of sock) {
    if (msg.type === "text") await sock.write(`Echo: ${msg.data}`, "text");
    else if (msg.type === "binary") await sock.write(msg.data, "binary");
  }
}
