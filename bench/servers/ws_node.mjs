/**
 * Echo server for the benchmark: `ws` 8 under Node.js.
 *
 * `ws` is loaded from bench/.node (run.ts installs it there with
 * `npm install --prefix bench/.node ws@8` when it is missing).
 *
 * Path `/` echoes text as text and binary as binary; path `/fanout` joins
 * the broadcast set, and a message from any member is sent to every member
 * (a loop of sends). Prints `READY <port>` when listening.
 *
 * Run: PORT=0 node bench/servers/ws_node.mjs
 */
import { createRequire } from "node:module";

const require = createRequire(
  new URL("../.node/package.json", import.meta.url),
);
const { WebSocketServer } = require("ws");

const members = new Set();
const wss = new WebSocketServer({
  host: "127.0.0.1",
  port: Number(process.env.PORT ?? "0"),
  backlog: 4096,
  perMessageDeflate: false,
});

wss.on("connection", (ws, req) => {
  ws.on("error", () => {});
  if (req.url === "/fanout") {
    members.add(ws);
    ws.on("close", () => members.delete(ws));
    ws.on("message", (data, isBinary) => {
      for (const member of members) member.send(data, { binary: isBinary });
    });
  } else {
    ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  }
});

wss.on("listening", () => {
  console.log(`READY ${wss.address().port}`);
});
