/**
 * A connection before it is a WebSocket: in its handshake, or serving a
 * plain HTTP request. It can be cut at any await (a timeout, a shutdown),
 * which aborts its `signal` and rejects what it races.
 *
 * @module
 */

import { deadlinesOf } from "./deadlines.ts";
import { encodeResponse } from "./http.ts";
import { closeQuietly } from "./http_head.ts";
import type { Member } from "./members.ts";
import type { ConnectionInfo } from "./options.ts";

/** The reason a cut connection's `signal` is aborted with. */
const CUT = new Error("Connection cut");

/** One connection before it is a socket: it can be cut at any await. */
export class PendingConn {
  readonly conn: Deno.Conn;
  // Made on first use: most connections are never cut and never race user
  // code, and an AbortController per connection was measurable under churn.
  #abort: AbortController | null = null;
  // What race() waits on, rejected when the connection is cut.
  #racer: ((reason: unknown) => void) | null = null;
  #cut = false;
  /** Where the server follows it: cut at once on shutdown, or given closeTimeout. */
  phase: "handshake" | "request" = "handshake";
  member: Member<PendingConn> | null = null;

  constructor(conn: Deno.Conn) {
    this.conn = conn;
  }

  /** Aborted when the connection is cut. */
  get signal(): AbortSignal {
    if (this.#abort === null) {
      this.#abort = new AbortController();
      if (this.#cut) this.#abort.abort(CUT);
    }
    return this.#abort.signal;
  }

  /** Closes the connection and rejects what {@linkcode race} waits on. */
  cut(): void {
    if (!this.#cut) {
      this.#cut = true;
      this.#abort?.abort(CUT);
      this.#racer?.(CUT);
      this.#racer = null;
    }
    closeQuietly(this.conn);
  }

  /**
   * `promise`, unless the connection is cut first (user code may never
   * settle). One race at a time (a hook, then a request, never two at
   * once), and nothing is kept once it settles: a kept-alive connection
   * races every request it serves.
   */
  race<V>(promise: V | Promise<V>): Promise<V> {
    if (this.#cut) return Promise.reject(CUT);
    if (!(promise instanceof Promise)) return Promise.resolve(promise);
    return new Promise<V>((resolve, reject) => {
      this.#racer = reject;
      promise.then(
        (value) => {
          this.#racer = null;
          resolve(value);
        },
        (error) => {
          this.#racer = null;
          reject(error);
        },
      );
    });
  }

  /** Cuts the connection after `ms` unless the returned function is called. */
  deadline(ms: number): () => void {
    return deadlinesOf(ms).add(() => this.cut()).cancel;
  }
}

/**
 * Answers with `status` and a short text body (when a status is given),
 * then closes. Resolves `null`: the connection did not become a socket.
 */
export async function fail(
  conn: Deno.Conn,
  status?: number,
  headers: Record<string, string> = {},
  message = "",
): Promise<null> {
  if (status !== undefined) {
    try {
      await writeAll(conn, encodeResponse(status, headers, message + "\n"));
    } catch {
      // The client is gone; nothing to tell it.
    }
  }
  closeQuietly(conn);
  return null;
}

/** Writes all of `bytes` to `conn`. */
export async function writeAll(
  conn: Deno.Conn,
  bytes: Uint8Array,
): Promise<void> {
  if (bytes.length === 0) return;
  // The first write takes the bytes as they are: no view of them.
  let offset = await conn.write(bytes);
  while (offset < bytes.length) {
    offset += await conn.write(bytes.subarray(offset));
  }
}

/**
 * Where a connection comes from, as the hooks see it, and whether it is
 * secure (`wss`/`https`): as `secure` says, or else whether it is TLS.
 */
export function originOf(
  conn: Deno.Conn,
  secure: boolean | undefined,
): { secure: boolean; info: ConnectionInfo } {
  return {
    secure: secure ?? typeof (conn as Deno.TlsConn).handshake === "function",
    info: {
      remoteAddr: conn.remoteAddr as Deno.NetAddr,
      localAddr: conn.localAddr as Deno.NetAddr,
    },
  };
}
