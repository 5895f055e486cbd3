/** `@portcullis/sdk/fastify` against a real Portcullis (the shared contract in middleware.ts). */
import { fastifyApp, run } from "./middleware.js";

run("fastify", fastifyApp);
