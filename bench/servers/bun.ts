/**
 * Echo server for the benchmark: Bun's built-in WebSocket (`Bun.serve`).
 *
 * Path `/` echoes text as text and binary as binary; path `/fanout`
 * subscribes to a topic, and a message from any subscriber is published to
 * all of them with Bun's `server.publish` (`FANOUT=loop`: a loop of sends).
 * Prints `READY <port>` when listening.
 *
 * Run: PORT=0 bun bench/servers/bun.ts
 */

interface BunSocket {
  data: { fanout: boolean };
  send(data: string | Uint8Array): number;
  subscribe(topic: string): void;
}

// deno-lint-ignore no-explicit-any
const Bun = (globalThis as any).Bun;
const members = new Set<BunSocket>();
const loop = Bun.env.FANOUT === "loop";

const server = Bun.serve({
  hostname: "127.0.0.1",
  port: Number(Bun.env.PORT ?? "0"),
  fetch(
    req: Request,
    server: { upgrade(req: Request, o: unknown): boolean },
  ) {
    const fanout = new URL(req.url).pathname === "/fanout";
    if (server.upgrade(req, { data: { fanout } })) return undefined;
    return new Response("WebSocket only", { status: 426 });
  },
  websocket: {
    // The limits well above what the scenarios need: no drops.
    maxPayloadLength: 64 * 1024 * 1024,
    backpressureLimit: 256 * 1024 * 1024,
    idleTimeout: 0,
    perMessageDeflate: false,
    open(ws: BunSocket) {
      if (!ws.data.fanout) return;
      if (loop) members.add(ws);
      else ws.subscribe("fanout");
    },
    close(ws: BunSocket) {
      members.delete(ws);
    },
    message(ws: BunSocket, message: string | Uint8Array) {
      if (ws.data.fanout && !loop) {
        server.publish("fanout", message);
      } else if (ws.data.fanout) {
        for (const member of members) member.send(message);
      } else {
        ws.send(message);
      }
    },
  },
});

console.log(`READY ${server.port}`);
