/**
 * The one error type core throws at its callers. `code` is the stable snake_case name the API
 * answers with; `status` is the HTTP status the server maps it to (core itself never sees HTTP).
 */
export class TerapiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** More fields of the error answer (a provider file's errors, each at file:line:col). */
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'TerapiError';
  }
}

export const badRequest = (code: string, message: string) => new TerapiError(400, code, message);
export const notFound = (code: string, message: string) => new TerapiError(404, code, message);
export const conflict = (code: string, message: string) => new TerapiError(409, code, message);

/**
 * The same error with its message passed through `change`: how a connection's secrets are taken out
 * of provider text before an error is answered or logged.
 */
export function reworded(e: unknown, change: (message: string) => string): unknown {
  if (e instanceof TerapiError) {
    const message = change(e.message);
    return message === e.message ? e : new TerapiError(e.status, e.code, message, e.details);
  }
  if (e instanceof Error) {
    e.message = change(e.message);
    if (e.stack) e.stack = change(e.stack);
  }
  return e;
}
