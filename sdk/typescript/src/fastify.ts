/**
 * Fastify plugin: `app.register(portcullis, { issuer, ... })` checks every request's
 * credential lazily and decorates `request.auth`; routes opt in with
 * `preHandler: requireAuth` or `preHandler: requireScope("read:orders")`. Refusals
 * are Portcullis problem documents with `WWW-Authenticate` (RFC 6750 §3).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest, preHandlerAsyncHookHandler } from "fastify";

import type { Auth } from "./auth.js";
import { authenticator, refusalResponse, scopeRefusal, type AuthOptions } from "./guard.js";

export type { Auth } from "./auth.js";
export type { AuthOptions as PortcullisPluginOptions } from "./guard.js";

declare module "fastify" {
  interface FastifyRequest {
    /** Set for an accepted credential by `requireAuth` / `requireScope`. */
    auth: Auth | null;
  }
  interface FastifyInstance {
    /** Checks a request's credential (throws a `PortcullisError`). */
    portcullisAuthenticate: (request: FastifyRequest) => Promise<Auth>;
  }
}

/** The plugin; not encapsulated, so `request.auth` is visible in every route. */
export async function portcullis(app: FastifyInstance, options: AuthOptions): Promise<void> {
  const authenticate = authenticator(options);
  app.decorateRequest("auth", null);
  app.decorate("portcullisAuthenticate", (request: FastifyRequest) => authenticate(request.headers));
}
// What fastify-plugin does: the decorations reach the parent scope.
(portcullis as unknown as Record<symbol, unknown>)[Symbol.for("skip-override")] = true;
(portcullis as unknown as Record<symbol, unknown>)[Symbol.for("fastify.display-name")] = "@portcullis/sdk/fastify";

export default portcullis;

/** The caller, or a refusal already sent (`undefined`). */
async function ensureAuth(request: FastifyRequest, reply: FastifyReply): Promise<Auth | undefined> {
  if (request.auth) return request.auth;
  try {
    request.auth = await request.server.portcullisAuthenticate(request);
    return request.auth;
  } catch (err) {
    send(reply, err);
    return undefined;
  }
}

/** A `preHandler`: 401 unless the request has a valid credential. */
export const requireAuth: preHandlerAsyncHookHandler = async function (request, reply) {
  // Returning the reply after sending ends the request here (async hooks).
  if (!(await ensureAuth(request, reply))) return reply;
};

/** A `preHandler`: 401 without a valid credential, 403 `insufficient_scope` without all of `scopes`. */
export function requireScope(...scopes: string[]): preHandlerAsyncHookHandler {
  return async function (request, reply) {
    const auth = await ensureAuth(request, reply);
    if (!auth) return reply;
    const refusal = scopeRefusal(auth, scopes);
    if (refusal) return send(reply, refusal);
  };
}

function send(reply: FastifyReply, err: unknown): FastifyReply {
  const { status, headers, body } = refusalResponse(err);
  return reply.code(status).headers(headers).send(JSON.stringify(body));
}
