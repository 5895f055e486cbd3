/** `@portcullis/sdk/express` against a real Portcullis (the shared contract in middleware.ts). */
import { expressApp, run } from "./middleware.js";

run("express", expressApp);
