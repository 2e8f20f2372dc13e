/**
 * The discovery endpoints: catalog, search, OpenAPI, well-known document and
 * llms.txt, all generated per request from the services and the paywall's
 * resolved routes (absolute URLs use the paywall's public origin).
 */
import express, { type Request, type Response, type Router } from "express";
import type { PaywallMiddleware } from "server402";
import { describeServices, PATHS, type ServiceSpec } from "./catalog.js";
import { llmsTxt } from "./llms.js";
import { buildOpenApi } from "./openapi.js";
import { queryProblem, searchServices } from "./search.js";
import { wellKnown } from "./well-known.js";

/** Build the discovery router for `services`, priced by `paywall`. */
export function discoveryRouter(services: readonly ServiceSpec[], paywall: PaywallMiddleware): Router {
  // Fail at startup, not on the first request, when services and routes disagree.
  describeServices(services, paywall, "http://localhost");
  const router = express.Router();
  const catalog = (req: Request) => {
    const origin = paywall.origin(req);
    return { origin, services: describeServices(services, paywall, origin) };
  };
  const send = (res: Response, status: number, body: unknown) => res.status(status).set("Cache-Control", "no-cache").json(body);

  router.get(PATHS.services, (req, res) => send(res, 200, { services: catalog(req).services }));
  router.get(`${PATHS.services}/:id`, (req, res) => {
    const { services: all } = catalog(req);
    const id = String(req.params.id);
    const s = all.find((x) => x.id === id || x.aliases.includes(id));
    if (!s) return void send(res, 404, { error: "unknown_service", message: `no service ${JSON.stringify(id.slice(0, 64))}.`, serviceIds: all.map((x) => x.id) });
    send(res, 200, s);
  });
  router.get(PATHS.search, (req, res) => {
    const problem = queryProblem(req.query.q);
    if (problem) return void send(res, 400, { error: "invalid_query", message: problem });
    const q = String(req.query.q);
    const hits = searchServices(catalog(req).services, q);
    send(res, 200, { query: q, total: hits.length, results: hits.map((h) => ({ score: h.score, matched: h.matched, ...h.service })) });
  });
  router.get(PATHS.openapi, (req, res) => {
    const { origin, services: all } = catalog(req);
    send(res, 200, buildOpenApi(all, origin));
  });
  router.get(PATHS.wellKnown, (req, res) => {
    const { origin, services: all } = catalog(req);
    send(res, 200, wellKnown(all, origin));
  });
  router.get(PATHS.llms, (req, res) => {
    const { origin, services: all } = catalog(req);
    res.status(200).set("Cache-Control", "no-cache").type("text/plain; charset=utf-8").send(llmsTxt(all, origin));
  });
  return router;
}
