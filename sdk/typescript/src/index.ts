/**
 * `@portcullis/sdk`: a typed client for the Portcullis HTTP API and offline
 * verification of its access tokens. Express middleware: `@portcullis/sdk/express`.
 */
export { createClient, type ClientOptions, type PortcullisClient, type Tokens } from "./client.js";
export { PortcullisError, type Problem } from "./errors.js";
export { verifyToken, type AccessTokenClaims, type VerifyOptions } from "./verify.js";
export { authFromClaims, type Auth } from "./auth.js";
export type { paths, components, operations } from "./schema.js";
