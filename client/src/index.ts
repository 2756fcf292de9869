/**
 * The Terapi API client: openapi-fetch over the types generated from server/openapi.yaml
 * (schema.generated.ts), plus the two helpers where a bare call is not enough: paging through records
 * and the proxy.
 */
import createClient, { type Client, type ClientOptions } from 'openapi-fetch';
import type { components, operations, paths } from './schema.generated.ts';

export type { components, operations, paths } from './schema.generated.ts';
export type Schemas = components['schemas'];
export type TerapiClient = Client<paths> & {
  /** Every record of a model, in change order: pages through GET /records with next_cursor. */
  records<T extends object = Record<string, unknown>>(query: RecordsQuery): AsyncGenerator<SyncedRecord<T>>;
  /** A request to the provider's API through Terapi, which injects the connection's credentials. */
  proxy(request: ProxyRequest): Promise<Response>;
};

export interface TerapiClientOptions extends ClientOptions {
  /** Where the server listens, e.g. http://localhost:3003. */
  baseUrl: string;
  /** TERAPI_SECRET_KEY, sent as Authorization: Bearer. Leave it out to pass other credentials per call. */
  secretKey?: string;
}

export type RecordsQuery = operations['listRecords']['parameters']['query'];
export type SyncedRecord<T extends object = Record<string, unknown>> = T & Pick<Schemas['SyncedRecord'], '_terapi_metadata'>;

export type ProxyMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
export interface ProxyRequest {
  method?: ProxyMethod;
  /**
   * The path under the provider's base URL, as it reads (e.g. repos/acme/app/issues): each segment is
   * encoded, the slashes kept. A segment that holds a slash itself (GitLab's group/project as one
   * segment) is given in an array of segments: ['projects', 'group/project', 'issues'].
   */
  path: string | string[];
  providerConfigKey: string;
  connectionId: string;
  /** The provider API's query parameters. */
  query?: Record<string, string>;
  /** A JSON body, passed on to the provider. */
  body?: Record<string, unknown> | unknown[];
  /** More headers for the provider (Authorization is Terapi's own and never passed on). */
  headers?: Record<string, string>;
}

/** An answer of Terapi's with an error status: the ErrorResponse's code, message and request id. */
export class TerapiApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly requestId: string | undefined;
  constructor(status: number, body: unknown) {
    const e = (body && typeof body === 'object' ? body : {}) as Partial<Schemas['ErrorResponse']>;
    super(e.message ?? `HTTP ${status}`);
    this.name = 'TerapiApiError';
    this.status = status;
    this.code = e.error ?? 'http_error';
    this.requestId = e.request_id;
  }
}

/**
 * Path parameters, each encoded whole (openapi-fetch's default), except the proxy's `path`, whose
 * slashes separate the provider's path segments: encoded whole it would reach the provider as %2F.
 */
export function pathSerializer(pathname: string, params: Record<string, unknown>): string {
  return pathname.replace(/\{([^}]+)\}/g, (whole, name: string) => {
    const value = params[name];
    if (value === undefined || value === null) return whole;
    // pathname is the base URL followed by the document's path template.
    if (!(pathname.endsWith('/proxy/{path}') && name === 'path')) return encodeURIComponent(String(value));
    const segments = Array.isArray(value) ? value.map(String) : String(value).replace(/^\/+/, '').split('/');
    return segments.map(encodeURIComponent).join('/');
  });
}

export function createTerapiClient({ baseUrl, secretKey, headers, ...options }: TerapiClientOptions): TerapiClient {
  const client = createClient<paths>({
    baseUrl: baseUrl.replace(/\/$/, ''),
    pathSerializer,
    // The proxy's `query` object is the provider's parameters themselves (style form, explode), not query[name].
    querySerializer: { object: { style: 'form', explode: true } },
    headers: { ...(secretKey ? { authorization: `Bearer ${secretKey}` } : {}), ...(headers as Record<string, string> | undefined) },
    ...options,
  });
  return Object.assign(client, {
    records: <T extends object>(query: RecordsQuery) => records<T>(client, query),
    proxy: (request: ProxyRequest) => proxy(client, request),
  });
}

async function* records<T extends object>(client: Client<paths>, query: RecordsQuery): AsyncGenerator<SyncedRecord<T>> {
  let cursor = query.cursor;
  for (;;) {
    const { data, error, response } = await client.GET('/records', { params: { query: { ...query, ...(cursor ? { cursor } : {}) } } });
    if (error) throw new TerapiApiError(response.status, error);
    yield* data.records as SyncedRecord<T>[];
    if (data.next_cursor === null) return;
    cursor = data.next_cursor;
  }
}

/**
 * The provider's answer as a fetch Response, unchanged (status, headers, body streamed as it comes).
 * Terapi's own refusals (an unknown connection, a revoked grant...) come back as a Response too, with
 * an ErrorResponse body.
 */
async function proxy(client: Client<paths>, r: ProxyRequest): Promise<Response> {
  const { error, response } = await client.request((r.method ?? 'GET').toLowerCase() as Lowercase<ProxyMethod>, '/proxy/{path}', {
    params: {
      // An array of segments is the serializer's to join (the document's type is the joined string).
      path: { path: r.path as string },
      header: { 'Provider-Config-Key': r.providerConfigKey, 'Connection-Id': r.connectionId },
      ...(r.query ? { query: { query: r.query } } : {}),
    },
    ...(r.body !== undefined ? { body: r.body } : {}),
    headers: r.headers,
    // A success is handed over unread; an error answer openapi-fetch has read is given back whole.
    parseAs: 'stream',
  });
  if (response.ok) return response;
  const body = error === undefined ? null : typeof error === 'string' ? error : JSON.stringify(error);
  const headers = new Headers(response.headers);
  // The body is read (and decoded) already: its length and encoding on the wire no longer apply.
  headers.delete('content-length');
  headers.delete('content-encoding');
  return new Response(body, { status: response.status, statusText: response.statusText, headers });
}
