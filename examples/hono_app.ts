/**
 * A Hono app and WebSockets on one port: the app serves the page, a JSON
 * API and a server-sent events clock through `onRequest`; `/ws` is a chat
 * room over our WebSockets. Who you are is checked once, in the `upgrade`
 * hook, and rides along as `sock.data`.
 *
 * Run: deno run --allow-net --allow-env examples/hono_app.ts
 * then open http://127.0.0.1:8080/?token=ann-token
 * (PORT=0 picks a free port; stop with Ctrl+C.)
 */
import { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import { listen } from "../mod.ts";

/** Tokens and the users they stand for (a real app asks its database). */
const USERS = new Map([["ann-token", "ann"], ["bob-token", "bob"]]);

function userOf(token: string | null | undefined): string | undefined {
  return token == null ? undefined : USERS.get(token);
}

const app = new Hono();

// Middleware: every plain request gets a request id and is logged.
app.use("*", async (c, next) => {
  const started = performance.now();
  await next();
  c.header("x-response-time", `${(performance.now() - started).toFixed(1)}ms`);
  console.log(`${c.req.method} ${c.req.path} ${c.res.status}`);
});

app.get("/", (c) =>
  c.html(`<!doctype html>
<title>Hono + @silly/websocket</title>
<ul id="log"></ul>
<form id="f"><input id="m" autocomplete="off"><button>Send</button></form>
<script>
  const token = new URLSearchParams(location.search).get("token") ?? "";
  const ws = new WebSocket(\`ws://\${location.host}/ws?token=\${token}\`);
  const log = (text) => {
    const li = document.createElement("li");
    li.textContent = text;
    document.getElementById("log").append(li);
  };
  ws.onmessage = (e) => log(e.data);
  ws.onclose = (e) => log("closed: " + e.code);
  document.getElementById("f").onsubmit = (e) => {
    e.preventDefault();
    ws.send(document.getElementById("m").value);
    document.getElementById("m").value = "";
  };
  new EventSource("/clock").onmessage = (e) => document.title = e.data;
</script>`));

app.get("/api/me", (c) => {
  const user = userOf(c.req.query("token"));
  return user === undefined
    ? c.json({ error: "unknown token" }, 401)
    : c.json({ user });
});

app.get(
  "/api/online",
  (c) => c.json({ online: server.subscriberCount("chat") }),
);

// Server-sent events: one event a second until the client goes away.
app.get("/clock", (c) =>
  streamSSE(c, async (stream) => {
    while (!stream.aborted && !c.req.raw.signal.aborted) {
      await stream.writeSSE({ data: new Date().toISOString() });
      await stream.sleep(1000);
    }
  }));

const port = Number(Deno.env.get("PORT") ?? "8080");
const server = listen<{ user: string }>({
  addr: `127.0.0.1:${port}`,
  onRequest: app.fetch,
  // Only /ws upgrades, and only with a known token: checked once, here.
  upgrade(req) {
    const url = new URL(req.url);
    if (url.pathname !== "/ws") {
      return new Response("Not found", { status: 404 });
    }
    const user = userOf(url.searchParams.get("token"));
    if (user === undefined) {
      return new Response("Unauthorized", { status: 401 });
    }
    return { data: { user } };
  },
  async handler(sock) {
    const { user } = sock.data;
    sock.subscribe("chat");
    server.publish("chat", `${user} joined`, "text");
    for await (const msg of sock) {
      if (msg.type === "text") {
        server.publish("chat", `${user}: ${msg.data}`, "text");
      }
    }
    server.publish("chat", `${user} left`, "text");
  },
});

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, async () => {
    await server.close();
    Deno.exit(0);
  });
}
console.log(`Hono app listening on ws://127.0.0.1:${server.addr.port}`);
