/**
 * The Hono app of the HTTP benchmark: one middleware and a few routes, as
 * a small API would have. The same app runs behind this library's
 * `onRequest` and behind `Deno.serve`.
 *
 * @module
 */
import { Hono } from "hono";

/** A fresh copy of the benchmark app. */
export function benchApp(): Hono {
  const app = new Hono();
  app.use("*", async (c, next) => {
    await next();
    c.header("x-app", "bench");
  });
  app.get("/", (c) => c.text("Hello, World!"));
  app.get("/json", (c) => c.json({ message: "Hello, World!" }));
  app.get("/users/:id", (c) => c.json({ id: c.req.param("id") }));
  return app;
}

/** The plain hello world: a `Response` and nothing else. */
export function hello(): Response {
  return new Response("Hello, World!");
}
