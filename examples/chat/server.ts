/**
 * The chat demo: one command serves a web page and a WebSocket chat on the
 * same port.
 *
 * - `GET /` is the page (`index.html` beside this file), `GET /health`
 *   answers `ok`: plain HTTP through the `onRequest` option.
 * - `GET /ws?nick=ann` is the chat. The `upgrade` hook checks the path,
 *   the nickname and the `Origin` (only pages served from this host may
 *   connect), and attaches the nickname as `sock.data`.
 * - Every socket subscribes to the topic "chat"; messages, join and leave
 *   notices go out with `server.publish`, encoded once for everyone.
 * - A newcomer gets the last `HISTORY` messages (default 50).
 *
 * Run: deno task start
 * (or: deno run --allow-net --allow-env --allow-read=examples/chat examples/chat/server.ts;
 * PORT=0 picks a free port, HOST=0.0.0.0 serves your network; stop with Ctrl+C.)
 */
import { listen, type ServerSocket } from "../../mod.ts";

/** Who a socket is, attached by the upgrade hook. */
interface Member {
  nick: string;
}

/** A chat message as it is sent and kept in the history. */
interface ChatMessage {
  type: "message";
  /** Unique across restarts: the server's boot id and a counter. */
  id: string;
  nick: string;
  text: string;
  time: number;
}

const HOST = Deno.env.get("HOST") ?? "127.0.0.1";
const PORT = Number(Deno.env.get("PORT") ?? "8080");
const HISTORY = Number(Deno.env.get("HISTORY") ?? "50");
const MAX_TEXT = 500;
const MAX_NICK = 24;
const TOPIC = "chat";

const page = await Deno.readFile(new URL("./index.html", import.meta.url));
const boot = Date.now().toString(36);
let sequence = 0;
const history: ChatMessage[] = [];
const online = new Map<ServerSocket<Member>, string>();

function json(value: unknown): string {
  return JSON.stringify(value);
}

/** A nickname: trimmed, 1 to 24 characters, no control characters. */
function parseNick(value: string | null): string | null {
  const nick = (value ?? "").trim();
  if (nick.length === 0 || [...nick].length > MAX_NICK) return null;
  return /[\p{Cc}\p{Cf}]/u.test(nick) ? null : nick;
}

/** The host of an `Origin` header, `null` for "null" and other non-URLs. */
function originHost(origin: string): string | null {
  try {
    return new URL(origin).host;
  } catch {
    return null;
  }
}

/** Who is online, sorted, each nickname once. */
function whoIsOnline(): string[] {
  return [...new Set(online.values())].sort((a, b) => a.localeCompare(b));
}

async function handler(sock: ServerSocket<Member>): Promise<void> {
  const { nick } = sock.data;
  online.set(sock, nick);
  sock.subscribe(TOPIC);
  try {
    // Not awaited: it is queued before the join notice below all the same,
    // and a page that is already gone just ends the loop below.
    sock.write(
      json({ type: "welcome", nick, history, online: whoIsOnline() }),
      "text",
    ).catch(() => {});
    server.publish(
      TOPIC,
      json({ type: "join", nick, time: Date.now(), online: whoIsOnline() }),
      "text",
    );
    console.log(`${nick} joined (${online.size} online)`);

    for await (const msg of sock) {
      if (msg.type !== "text") continue;
      let text: unknown;
      try {
        text = JSON.parse(msg.data).text;
      } catch {
        text = undefined;
      }
      if (typeof text !== "string" || text.trim() === "") continue;
      const message: ChatMessage = {
        type: "message",
        id: `${boot}-${++sequence}`,
        nick,
        text: text.trim().slice(0, MAX_TEXT),
        time: Date.now(),
      };
      history.push(message);
      if (history.length > HISTORY) history.shift();
      server.publish(TOPIC, json(message), "text");
    }
  } finally {
    // The socket leaves its topics by itself when it closes.
    online.delete(sock);
    server.publish(
      TOPIC,
      json({ type: "leave", nick, time: Date.now(), online: whoIsOnline() }),
      "text",
    );
    console.log(`${nick} left (${online.size} online)`);
  }
}

const shutdown = new AbortController();
const server = listen<Member>({
  addr: HOST.includes(":") ? `[${HOST}]:${PORT}` : `${HOST}:${PORT}`,
  signal: shutdown.signal,
  maxMessageSize: 4096,
  // Browsers that vanish without a close (a laptop lid) are noticed.
  pingInterval: 30_000,
  upgrade(req) {
    const url = new URL(req.url);
    if (url.pathname !== "/ws") {
      return new Response("Not found\n", { status: 404 });
    }
    // Browsers send Origin: only pages served by this server may connect.
    // Clients that are not browsers send none.
    const origin = req.headers.get("origin");
    if (origin !== null && originHost(origin) !== url.host) {
      return new Response(`Origin not allowed: ${origin}\n`, { status: 403 });
    }
    const nick = parseNick(url.searchParams.get("nick"));
    if (nick === null) {
      return new Response(
        `Invalid nickname: 1 to ${MAX_NICK} characters\n`,
        { status: 400 },
      );
    }
    return { data: { nick } };
  },
  onRequest(req) {
    const { pathname } = new URL(req.url);
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("Method not allowed\n", {
        status: 405,
        headers: { allow: "GET, HEAD" },
      });
    }
    if (pathname === "/" || pathname === "/index.html") {
      return new Response(page, {
        headers: {
          "content-type": "text/html; charset=utf-8",
          "cache-control": "no-cache",
        },
      });
    }
    if (pathname === "/health") {
      return new Response(
        json({ ok: true, online: online.size, history: history.length }),
        { headers: { "content-type": "application/json" } },
      );
    }
    return new Response("Not found\n", { status: 404 });
  },
  handler,
});

// Ctrl+C or kill: 1001 Going Away to every page (they reconnect), then exit.
// Registered before the line below, so a signal right after it is not missed.
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => shutdown.abort());
}
server.finished.then(() => Deno.exit(0));

const shown = HOST === "0.0.0.0" || HOST === "::" ? "127.0.0.1" : HOST;
console.log(
  `Chat demo listening on http://${
    shown.includes(":") ? `[${shown}]` : shown
  }:${server.addr.port}/ (open it in a browser; Ctrl+C to stop)`,
);
