/**
 * One server per core on the same port: each worker (a thread with its own
 * event loop) calls `listen({ reusePort: true })` on the same address, and
 * Linux spreads incoming connections among them (`SO_REUSEPORT`). Every
 * reply says which worker served it.
 *
 * Topics are per server, so the workers share theirs through a
 * `workerBroker` (a `BroadcastChannel` between the workers of this
 * process): a text message that starts with `/all ` is published to the
 * topic `all`, which every socket of every worker is subscribed to. Any
 * other text is echoed back. Across processes or hosts, use `redisBroker`
 * from `@silly/websocket/redis` the same way.
 *
 * Run: deno run --unstable-net --allow-net --allow-env --allow-read examples/multicore_server.ts
 * (WORKERS=4 for four workers, default one per core; PORT=0 picks a free
 * port; stop with Ctrl+C.) `reusePort` needs `--unstable-net` in Deno 2.
 */
import { listen, type Socket, workerBroker } from "../mod.ts";

/** What the main thread tells a worker. */
type Command = { type: "start"; id: number; port: number } | { type: "stop" };
/** What a worker tells the main thread. */
type Report = { type: "listening"; port: number } | { type: "stopped" };

/** In a worker: serve until told to stop. */
function runWorker(scope: Worker & { close(): void }): void {
  let stop: (() => Promise<void>) | undefined;
  scope.onmessage = async (event: MessageEvent<Command>) => {
    const command = event.data;
    if (command.type === "start") {
      const server = listen({
        addr: `127.0.0.1:${command.port}`,
        reusePort: true,
        // The same name in every worker: their topics become one.
        broker: workerBroker("multicore"),
        async handler(sock: Socket) {
          sock.subscribe("all");
          for await (const msg of sock) {
            if (msg.type !== "text") continue;
            if (msg.data.startsWith("/all ")) {
              const text = msg.data.slice("/all ".length);
              // Reaches the sockets of this worker and of every other one.
              server.publish(
                "all",
                `worker ${command.id} to all: ${text}`,
                "text",
              );
            } else {
              await sock.write(`worker ${command.id}: ${msg.data}`, "text");
            }
          }
        },
      });
      stop = () => server.close();
      scope.postMessage(
        { type: "listening", port: server.addr.port } satisfies Report,
      );
    } else {
      await stop?.();
      scope.postMessage({ type: "stopped" } satisfies Report);
      scope.close();
    }
  };
}

/** Starts a worker running this file and waits until it listens. */
function startWorker(id: number, port: number): Promise<[Worker, number]> {
  const worker = new Worker(import.meta.url, {
    type: "module",
    name: `ws-worker-${id}`,
  });
  return new Promise((resolve, reject) => {
    worker.onerror = (event) => reject(event.error ?? event.message);
    worker.onmessage = (event: MessageEvent<Report>) => {
      if (event.data.type === "listening") resolve([worker, event.data.port]);
    };
    worker.postMessage({ type: "start", id, port } satisfies Command);
  });
}

/** Tells a worker to close its server and waits for it. */
function stopWorker(worker: Worker): Promise<void> {
  return new Promise((resolve) => {
    worker.onmessage = (event: MessageEvent<Report>) => {
      if (event.data.type === "stopped") resolve();
    };
    worker.postMessage({ type: "stop" } satisfies Command);
  });
}

async function main(): Promise<void> {
  const count = Number(
    Deno.env.get("WORKERS") ?? navigator.hardwareConcurrency ?? 1,
  );
  let port = Number(Deno.env.get("PORT") ?? "8080");
  // The first worker binds (port 0 becomes a real port); the rest join it.
  const workers: Worker[] = [];
  for (let id = 1; id <= count; id++) {
    const [worker, bound] = await startWorker(id, port);
    workers.push(worker);
    port = bound;
  }
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, async () => {
      await Promise.all(workers.map(stopWorker));
      Deno.exit(0);
    });
  }
  console.log(
    `${count} workers listening on ws://127.0.0.1:${port} (one server each, SO_REUSEPORT)`,
  );
}

// The main thread has no `WorkerGlobalScope`; a worker does.
if ("WorkerGlobalScope" in globalThis) {
  runWorker(self as unknown as Worker & { close(): void });
} else {
  await main();
}
