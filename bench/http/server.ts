/**
 * A server for the HTTP benchmark. `SERVER=ours|deno` picks this library's
 * `listen({ onRequest })` or `Deno.serve`; `APP=hono|plain` the Hono app or
 * the plain `Response`. Prints `READY <port>` when listening.
 *
 * Run: SERVER=ours APP=hono deno run -A bench/http/server.ts
 */
import { listen } from "../../mod.ts";
import { benchApp, hello } from "./app.ts";

const app = Deno.env.get("APP") === "plain" ? hello : benchApp().fetch;
if (Deno.env.get("SERVER") === "deno") {
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
  }, (req) => app(req));
  console.log(`READY ${server.addr.port}`);
} else {
  const server = listen({
    addr: "127.0.0.1:0",
    backlog: 4096,
    maxRequestsPerConnection: Number(Deno.env.get("MAX_REQUESTS") ?? 1000),
    handler() {},
    onError() {},
    onRequest: (req) => app(req),
  });
  console.log(`READY ${server.addr.port}`);
}

// For profiling (`--cpu-prof`): exit cleanly after EXIT_AFTER seconds.
const exitAfter = Number(Deno.env.get("EXIT_AFTER") ?? 0);
if (exitAfter > 0) setTimeout(() => Deno.exit(0), exitAfter * 1000);
