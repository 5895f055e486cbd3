/**
 * The one error type of the SDK: a non-2xx answer from Portcullis (an RFC 9457
 * problem document, or an RFC 6749 §5.2 OAuth error from `/oauth/*`), or a
 * credential refused by `verifyToken` / the middleware.
 */

/** An RFC 9457 problem document as Portcullis writes it. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail?: string;
  /** Stable machine-readable code, e.g. `token_expired`, `insufficient_scope`. */
  code: string;
  required_scopes?: string[];
  errors?: unknown[];
  [extra: string]: unknown;
}

export class PortcullisError extends Error {
  override name = "PortcullisError";
  /** HTTP status (0 when no answer came, e.g. a refresh lost on the network). */
  readonly status: number;
  /** `problem.code`, or the OAuth `error` for `/oauth/*` endpoints. */
  readonly code: string;
  /** The parsed problem document, when the answer was one. */
  readonly problem?: Problem;
  /** OAuth endpoints (RFC 6749 §5.2): `error` and `error_description`. */
  readonly error?: string;
  readonly error_description?: string;
  /** The answer itself (its body already read). */
  readonly response?: Response;

  constructor(init: {
    status: number;
    code: string;
    message?: string;
    problem?: Problem;
    error?: string;
    error_description?: string;
    response?: Response;
    cause?: unknown;
  }) {
    super(init.message ?? init.problem?.detail ?? init.error_description ?? init.code, { cause: init.cause });
    this.status = init.status;
    this.code = init.code;
    this.problem = init.problem;
    this.error = init.error;
    this.error_description = init.error_description;
    this.response = init.response;
  }

  /** Reads a non-2xx answer into an error (consumes the body). */
  static async fromResponse(res: Response): Promise<PortcullisError> {
    const text = await res.text().catch(() => "");
    let body: unknown;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      body = undefined;
    }
    if (isObject(body) && typeof body.code === "string") {
      const problem = body as Problem;
      return new PortcullisError({ status: res.status, code: problem.code, problem, response: res });
    }
    if (isObject(body) && typeof body.error === "string") {
      const desc = typeof body.error_description === "string" ? body.error_description : undefined;
      return new PortcullisError({
        status: res.status,
        code: body.error,
        error: body.error,
        error_description: desc,
        response: res,
      });
    }
    return new PortcullisError({
      status: res.status,
      code: `http_${res.status}`,
      message: `HTTP ${res.status}${text ? `: ${text.slice(0, 200)}` : ""}`,
      response: res,
    });
  }
}

/** A problem document like the server's (`type` is the code's URL). */
export function problem(status: number, code: string, detail: string, extra: Record<string, unknown> = {}): Problem {
  return {
    type: `https://portcullis.dev/problems/${code.replaceAll("_", "-")}`,
    title: TITLES[status] ?? "Error",
    status,
    detail,
    code,
    ...extra,
  };
}

const TITLES: Record<number, string> = {
  401: "Unauthorized",
  403: "Forbidden",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
