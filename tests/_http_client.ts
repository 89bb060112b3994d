/**
 * A raw HTTP/1.1 client over TCP for the plain HTTP tests: it sends the
 * bytes it is given and reads responses one by one (Content-Length,
 * chunked, or to the end), so keep-alive and pipelining can be checked
 * byte for byte.
 */

import { concat } from "./_helpers.ts";

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** One response as read off the wire. */
export interface WireResponse {
  statusLine: string;
  status: number;
  headers: Headers;
  body: string;
  /** The chunks of a chunked body, as framed. */
  chunks: string[] | null;
}

/** A raw HTTP/1.1 client on one connection. */
export class HttpClient implements AsyncDisposable {
  conn: Deno.TcpConn;
  #buffer = new Uint8Array(0);
  #eof = false;

  constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  /** Connects to 127.0.0.1:`port`. */
  static async connect(port: number): Promise<HttpClient> {
    return new HttpClient(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** Writes all of `data` (a string as UTF-8). */
  async send(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    for (let offset = 0; offset < bytes.length;) {
      offset += await this.conn.write(bytes.subarray(offset));
    }
  }

  async #fill(): Promise<boolean> {
    if (this.#eof) return false;
    const chunk = new Uint8Array(64 * 1024);
    let n: number | null;
    try {
      n = await this.conn.read(chunk);
    } catch {
      n = null;
    }
    if (n === null) {
      this.#eof = true;
      return false;
    }
    const joined = new Uint8Array(this.#buffer.length + n);
    joined.set(this.#buffer);
    joined.set(chunk.subarray(0, n), this.#buffer.length);
    this.#buffer = joined;
    return true;
  }

  /** Reads a line without its CRLF; throws at EOF. */
  async readLine(): Promise<string> {
    for (;;) {
      const b = this.#buffer;
      for (let i = 0; i + 1 < b.length; i++) {
        if (b[i] === 13 && b[i + 1] === 10) {
          this.#buffer = b.slice(i + 2);
          return decoder.decode(b.subarray(0, i));
        }
      }
      if (!await this.#fill()) throw new Error("EOF inside a line");
    }
  }

  /** Reads exactly `n` bytes; throws at EOF. */
  async readBytes(n: number): Promise<Uint8Array> {
    while (this.#buffer.length < n) {
      if (!await this.#fill()) throw new Error(`EOF: wanted ${n} bytes`);
    }
    const bytes = this.#buffer.slice(0, n);
    this.#buffer = this.#buffer.slice(n);
    return bytes;
  }

  /** Reads a response head: status line and header fields. */
  async readHead(): Promise<
    { statusLine: string; status: number; headers: Headers }
  > {
    const statusLine = await this.readLine();
    const headers = new Headers();
    for (;;) {
      const line = await this.readLine();
      if (line === "") break;
      const colon = line.indexOf(":");
      headers.append(line.slice(0, colon), line.slice(colon + 1).trim());
    }
    return { statusLine, status: Number(statusLine.split(" ")[1]), headers };
  }

  /** Reads one chunk of a chunked body: its bytes, or `null` for the last. */
  async readChunk(): Promise<Uint8Array | null> {
    const size = parseInt(await this.readLine(), 16);
    if (size === 0) {
      while (await this.readLine() !== "") { /* trailers */ }
      return null;
    }
    const bytes = await this.readBytes(size);
    if (await this.readLine() !== "") throw new Error("No CRLF after chunk");
    return bytes;
  }

  /** Reads one whole response; pass the method for a HEAD's. */
  async readResponse(method = "GET"): Promise<WireResponse> {
    const head = await this.readHead();
    let body: Uint8Array = new Uint8Array(0);
    let chunks: string[] | null = null;
    const length = head.headers.get("content-length");
    const noBody = method === "HEAD" || head.status === 204 ||
      head.status === 304 || head.status < 200;
    if (noBody) {
      // Nothing follows the head.
    } else if (head.headers.get("transfer-encoding") === "chunked") {
      chunks = [];
      const parts: Uint8Array[] = [];
      for (
        let c = await this.readChunk();
        c !== null;
        c = await this.readChunk()
      ) {
        chunks.push(decoder.decode(c));
        parts.push(c);
      }
      body = concat(...parts);
    } else if (length !== null) {
      body = await this.readBytes(Number(length));
    } else {
      body = await this.readToEnd();
    }
    return { ...head, body: decoder.decode(body), chunks };
  }

  /** Reads until the server closes; returns what came. */
  async readToEnd(): Promise<Uint8Array> {
    while (await this.#fill()) { /* keep reading */ }
    const all = this.#buffer;
    this.#buffer = new Uint8Array(0);
    return all;
  }

  /** Whether the server closed the connection with nothing more sent. */
  async closedByServer(): Promise<boolean> {
    return (await this.readToEnd()).length === 0;
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/** A GET request for `path`, with extra header lines. */
export function get(path: string, extra = ""): string {
  return `GET ${path} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`;
}
