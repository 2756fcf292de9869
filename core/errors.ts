/**
 * The one error type core throws at its callers. `code` is the stable snake_case name the API
 * answers with; `status` is the HTTP status the server maps it to (core itself never sees HTTP).
 */
export class TerapiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'TerapiError';
  }
}

export const badRequest = (code: string, message: string) => new TerapiError(400, code, message);
export const notFound = (code: string, message: string) => new TerapiError(404, code, message);
export const conflict = (code: string, message: string) => new TerapiError(409, code, message);
