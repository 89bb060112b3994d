/**
 * Headless Chromium for the browser tests (the chat demo end to end, and
 * permessage-deflate interop): found, started with a fresh profile, and
 * stopped. `.ci/run` installs Debian's `chromium` when it is missing.
 */

import { stopChild } from "./_helpers.ts";

/** Where Debian's package puts the browser. */
export const CHROMIUM = "/usr/bin/chromium";

/** Whether the browser is installed (tests that need it are ignored if not). */
export const HAS_CHROMIUM: boolean = (() => {
  try {
    return Deno.statSync(CHROMIUM).isFile;
  } catch {
    return false;
  }
})();

/** Options of {@linkcode Chromium.launch}. */
export interface ChromiumOptions {
  /** The page to open. */
  url?: string;
  /** Open the DevTools endpoint on a free port (see `devtoolsUrl`). */
  devtools?: boolean;
  /** Prefix of the temporary profile directory. */
  profilePrefix?: string;
}

/** Headless Chromium with a fresh profile, stopped and cleaned up on dispose. */
export class Chromium implements AsyncDisposable {
  readonly #child: Deno.ChildProcess;
  readonly #profile: string;
  readonly #stderr: Promise<void>;
  readonly #devtoolsUrl = Promise.withResolvers<string>();
  #log = "";
  #stopped: Promise<void> | null = null;

  private constructor(child: Deno.ChildProcess, profile: string) {
    this.#child = child;
    this.#profile = profile;
    this.#devtoolsUrl.promise.catch(() => {});
    this.#stderr = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of child.stderr) {
        // Only the start (the DevTools line) and the end matter.
        this.#log = (this.#log + decoder.decode(chunk, { stream: true }))
          .slice(-16_000);
        const match = /DevTools listening on (ws:\/\/\S+)/.exec(this.#log);
        if (match) this.#devtoolsUrl.resolve(match[1]);
      }
      this.#devtoolsUrl.reject(
        new Error(`Chromium exited early:\n${this.#log}`),
      );
    })();
  }

  /** Starts the browser. */
  static async launch(options: ChromiumOptions = {}): Promise<Chromium> {
    const profile = await Deno.makeTempDir({
      prefix: options.profilePrefix ?? "chromium_",
    });
    const child = new Deno.Command(CHROMIUM, {
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        `--user-data-dir=${profile}`,
        ...(options.devtools
          ? [
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
          ]
          : []),
        options.url ?? "about:blank",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    return new Chromium(child, profile);
  }

  /** The end of the browser's log, for failure messages. */
  get log(): string {
    return this.#log;
  }

  /** The DevTools WebSocket URL, once the browser printed it. */
  get devtoolsUrl(): Promise<string> {
    return this.#devtoolsUrl.promise;
  }

  /** Stops the browser: `signal` (null: none, it was asked to close), SIGKILL after 3 s. */
  stop(signal: Deno.Signal | null = "SIGTERM"): Promise<void> {
    this.#stopped ??= (async () => {
      await stopChild(this.#child, 3000, signal);
      await this.#stderr;
      await Deno.remove(this.#profile, { recursive: true }).catch(() => {});
    })();
    return this.#stopped;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}
