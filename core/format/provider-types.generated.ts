// Generated from schemas/provider.schema.json by `npm run generate`: do not edit, change the schema
// and run it again. A test fails while this file is out of date.
import type { Expression } from '../expression/expression.ts';
import type { Template } from './template.ts';

/**
 * One provider of Terapi: its auth, its API, its syncs and its actions. The file name (without .yaml)
 * is the provider's name. Strings marked x-kind are compiled at load: expression (JSONata), template
 * (${name} placeholders), regexp, json-schema.
 */
export interface ProviderFile {
  /** Name shown to people, e.g. GitHub. */
  display_name: string;
  /**
   * An https: or data:image URL of the provider's logo (square, shown at 32 by 32 pixels in the connect
   * UI); without one the UI shows the name's first letter.
   */
  logo?: string;
  /** Lower-case category slugs, e.g. dev-tools, crm, ticketing. */
  categories: string[];
  /** The provider's API documentation. */
  docs: string;
  /** The documentation pages the facts in this file come from. */
  references?: string[];
  auth: Auth;
  /** Per-connection values (a subdomain, an instance URL) usable as ${name} in URL and header templates. */
  connection_config?: Record<string, ConfigField>;
  post_connection?: PostConnection;
  verification?: Verification;
  api: Api;
  syncs?: Record<string, Sync>;
  actions?: Record<string, Action>;
}

export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** How the client id and secret reach the token URL: in the form body, or as HTTP basic auth. */
export type ClientAuth = 'body' | 'basic';

/** JSONata expressions over the token response that pick out the token, refresh token and expiry. */
export interface TokenResponse {
  /** Default: "access_token". */
  access_token?: Expression;
  /** Default: "refresh_token". */
  refresh_token?: Expression;
  /** Seconds until the access token expires. Default: "expires_in". */
  expires_in?: Expression;
  /** Absolute expiry (ISO date or epoch seconds), where the provider gives that instead. */
  expires_at?: Expression;
  /** Extra fields kept on the connection's metadata. */
  metadata?: Record<string, Expression>;
  /**
   * Seconds a token lives when the token response says nothing of its expiry (no expires_in, no
   * expires_at): Salesforce gives none, and its sessions last 2 hours by default. Without it such a
   * token is used until the API refuses it.
   */
  default_expires_in?: number;
}

export interface Revocation {
  /**
   * May name ${token} (percent-encoded) and ${client_id}, e.g. GitHub's
   * /applications/${client_id}/grant.
   */
  url: Template;
  /** Default: "POST". */
  method?: Method;
  /** Default: "access_token". */
  token?: 'access_token' | 'refresh_token';
  /**
   * How the client id and secret reach the revocation URL: in the body, as HTTP basic auth, or not at
   * all (none: the token authenticates itself, e.g. in an Authorization header). Default: the auth's
   * client_auth.
   */
  client_auth?: 'body' | 'basic' | 'none';
  /** Default: "form". */
  format?: 'form' | 'json';
  /** Name of the body field that carries the token. Default: "token". */
  token_param?: string;
  /**
   * Whether the grant a reconnect replaces is revoked (a connection is always revoked when deleted).
   * Set false where the provider keeps one grant per user and OAuth app, so that revoking an old token
   * would also end the grant the reconnect just made (Google). Default: true.
   */
  on_reconnect?: boolean;
  /**
   * Whether the body carries the token (as token_param). false where it goes in a header or the URL
   * only (${token} in headers or url). Default: true.
   */
  token_in_body?: boolean;
  /**
   * Send token_type_hint (access_token or refresh_token, the kind of token revoked) as RFC 7009
   * defines. Default: false.
   */
  token_type_hint?: boolean;
  /**
   * Headers of the revocation request; may also name ${token}, the token revoked (Slack and Zendesk:
   * Authorization: Bearer ${token}).
   */
  headers?: Record<string, Template>;
  /** More body fields of the revocation request; may also name ${token}. */
  params?: Record<string, Template>;
}

export type Auth = OAuth2Auth | AuthOAuth1 | ClientCredentialsAuth | ApiKeyAuth | BasicAuth | AuthJwtBearer | NoAuth;

export interface OAuth2Auth {
  mode: 'oauth2';
  authorization_url: Template;
  token_url: Template;
  /** Where refreshes go, if not token_url. */
  refresh_url?: Template;
  /**
   * The authorization server's issuer identifier, where the provider documents one (RFC 9207). When
   * set, the OAuth callback must carry an iss parameter equal to it, or the flow fails and nothing is
   * stored: this stops a mix-up attack, where an authorization code from another server is sent to this
   * provider's token URL.
   */
  issuer?: string;
  /** Default scopes, used when the integration sets none. */
  scopes?: string[];
  /** Default: " ". */
  scope_separator?: string;
  /**
   * Authorization URL parameter that carries the scopes (Slack user scopes: user_scope). Default:
   * "scope".
   */
  scope_param?: string;
  /** More query parameters of the authorization URL (templates). */
  authorization_params?: Record<string, Template>;
  /** More fields of the token request body (templates). */
  token_params?: Record<string, Template>;
  /** Headers of every token and refresh request (templates), e.g. Notion-Version. */
  token_headers?: Record<string, Template>;
  /** More fields of the refresh request body (templates), e.g. Zendesk's expires_in. */
  refresh_params?: Record<string, Template>;
  /** Default: false. */
  pkce?: boolean;
  /** Default: "body". */
  client_auth?: ClientAuth;
  /** Default: "form". */
  token_request_format?: 'form' | 'json';
  token_response?: TokenResponse;
  /** Default: 300. */
  refresh_buffer_seconds?: number;
  /**
   * On a 401 from the API (a sync's page, an action, the proxy), refresh the token once and send the
   * request again, for providers whose tokens can end before their stated expiry (a Salesforce session
   * timeout, a revoked session). Only one refresh happens for many requests refused with the same
   * token. Default: false.
   */
  refresh_on_401?: boolean;
  revocation?: Revocation;
}

export interface ClientCredentialsAuth {
  mode: 'oauth2_client_credentials';
  token_url: Template;
  /**
   * Whether each connection brings its own OAuth client (createConnection credentials {"type":
   * "oauth2_client_credentials", "client_id", "client_secret"}, sealed like every credential).
   * optional: the integration's client id and secret are the default, and a connection may give its
   * own. required: every connection gives its own (one app per customer account, as Zoom
   * server-to-server apps), and the integration needs none. Default: "optional".
   */
  connection_client?: 'optional' | 'required';
  scopes?: string[];
  /** Default: " ". */
  scope_separator?: string;
  /** More fields of the token request body (templates). */
  token_params?: Record<string, Template>;
  /** Headers of every token and refresh request (templates), e.g. Notion-Version. */
  token_headers?: Record<string, Template>;
  /** Default: "body". */
  client_auth?: ClientAuth;
  /** Default: "form". */
  token_request_format?: 'form' | 'json';
  token_response?: TokenResponse;
  /** Default: 300. */
  refresh_buffer_seconds?: number;
  /**
   * On a 401 from the API (a sync's page, an action, the proxy), refresh the token once and send the
   * request again, for providers whose tokens can end before their stated expiry (a Salesforce session
   * timeout, a revoked session). Only one refresh happens for many requests refused with the same
   * token. Default: false.
   */
  refresh_on_401?: boolean;
}

export interface ApiKeyAuth {
  mode: 'api_key';
  /** What the end user is asked for, e.g. Secret key. */
  label?: string;
  /**
   * A regular expression the whole key must match (anchored for you). It runs on RE2, in linear time:
   * no lookarounds, no backreferences.
   */
  pattern?: string;
  token_exchange?: TokenExchange;
}

export interface BasicAuth {
  mode: 'basic';
  username_label?: string;
  password_label?: string;
  /** Default: false. */
  password_optional?: boolean;
  token_exchange?: TokenExchange;
}

export interface NoAuth {
  mode: 'none';
}

export interface ConfigField {
  description?: string;
  /**
   * A regular expression the whole value must match (anchored for you). It runs on RE2, in linear time:
   * no lookarounds, no backreferences.
   */
  pattern: string;
  /**
   * url: an https origin such as https://acme.my.salesforce.com, which may start a URL template.
   * Default: "text".
   */
  format?: 'text' | 'url';
  example?: string;
  /** Default: false. */
  optional?: boolean;
  /**
   * The value used when the connection gives none (Salesforce's login.salesforce.com, GitLab's
   * gitlab.com, Microsoft's tenant common): the field is then optional. It must match the field's
   * pattern (checked at load), and is filled in at connection time and for connections made before the
   * default was added.
   */
  default?: string;
  /** Filled from the token response by this JSONata expression. */
  from_token_response?: Expression;
  /**
   * Filled from this query parameter of the OAuth callback (Shopify's shop, Zoho's accounts-server),
   * checked against the field's pattern before the code is exchanged: the token URL may name it.
   */
  from_callback?: string;
}

export interface RequestSpec {
  /** Default: "GET". */
  method?: Method;
  path: Template;
  /** Query parameters (templates). */
  params?: Record<string, Template>;
  headers?: Record<string, Template>;
  /** JSONata expression giving the body: sent as JSON, or form-encoded with body_format: form. */
  body?: Expression;
  /**
   * How the body is encoded. json: application/json. form: application/x-www-form-urlencoded (Stripe's
   * and Twilio's writes); nested objects and arrays use bracket keys, as Stripe reads them:
   * {"metadata": {"plan": "pro"}, "expand": ["customer"]} is sent as
   * metadata[plan]=pro&expand[0]=customer. null values are left out, booleans and numbers are sent as
   * text. Default: "json".
   */
  body_format?: 'json' | 'form';
  /**
   * Replaces api.error for this request: a JSONata expression over the response body whose non-empty
   * result means the call failed, even with a 2xx status.
   */
  error?: Expression;
  /**
   * Replaces the retry rules of api.retry for this request (its keys are merged over api.retry's), or
   * false: the request is sent once and never retried.
   */
  retry?: false | Retry;
  /**
   * Whether the request can safely be sent twice: by default GET, PUT and DELETE can, and an action's
   * POST and PATCH cannot. A request that cannot is retried only when the provider says it was not
   * applied (a 429, a rate_limited answer, a connection refused), never on a 5xx or a timeout, unless
   * its own retry.statuses lists that status. Sync requests only read: they are always retried.
   */
  idempotent?: boolean;
}

/**
 * A request made once a connection is made, whose response fills connection_config or metadata (Jira's
 * cloud id).
 */
export interface PostConnection {
  request: RequestSpec;
  /**
   * Where the response lists several results (a user's Jira sites), which one the connection keeps: the
   * first of `items` for which `where` is true. config and metadata are then read from that item ($),
   * with the whole response as $response. No item matching is a 400 no_matching_result that lists what
   * there was.
   */
  choose?: {
    /** The results in the response body. Default: "$". */
    items?: Expression;
    /**
     * True for the item to keep; sees $config, the connection's configuration so far (a field the app
     * or end user gave chooses, e.g. $not($exists($config.site_url)) or url = $config.site_url).
     * Without it, the first item.
     */
    where?: Expression;
  };
  config?: Record<string, Expression>;
  metadata?: Record<string, Expression>;
}

/** A request that must succeed before an API key or password is accepted. */
export interface Verification {
  request: RequestSpec;
  /**
   * Error statuses that still prove the credentials valid: the provider knew them but refused this
   * endpoint to them (Stripe answers 403 to a restricted key without the permission, 401 to a key it
   * does not know). 400 and 401 cannot be listed.
   */
  valid_statuses?: number[];
}

export interface Api {
  base_url: Template;
  /**
   * Headers sent on every request to the API (templates), e.g. an API version: Notion-Version:
   * "2022-06-28". A request's own headers win.
   */
  headers?: Record<string, Template>;
  /**
   * Query parameters sent on every request to the API (templates), e.g. an API version: api-version:
   * "7.1". A request's own params win; a next-page URL that carries the parameter keeps its own value.
   */
  params?: Record<string, Template>;
  /**
   * How credentials go on every request. Default: Authorization: Bearer ${access_token} (oauth2), Basic
   * ${basic_auth} (basic).
   */
  credentials?: {
    in: 'header' | 'query';
    name: string;
    value: Template;
  };
  retry?: Retry;
  /**
   * How long one request to the API may take, in seconds, before it is given up and retried like a 5xx.
   * Default: 30.
   */
  timeout_seconds?: number;
  /**
   * A JSONata expression over every response body of a sync page or an action (GraphQL APIs and Slack
   * answer errors with HTTP 200): a non-empty result (anything but null, false, 0, "", [] or {}) means
   * the call failed, and a string or strings are the provider's message. A failing sync page fails the
   * run; a failing action answers 502 provider_error with the message. E.g. $count(errors) > 0 ?
   * $join(errors.message, "; ").
   */
  error?: Expression;
}

/**
 * When a request is sent again: the statuses and bodies that mean "try again", and how long to wait
 * (the body's wait_seconds, then Retry-After, then the reset header, then penalty_seconds, else
 * exponential backoff with jitter).
 */
export interface Retry {
  /**
   * Statuses retried (for a request that can safely be repeated; see request.idempotent). Default:
   * [429,500,502,503,504].
   */
  statuses?: number[];
  /** Attempts in all, the first one included. Default: 3. */
  max_attempts?: number;
  /**
   * Header(s) giving the wait, in seconds or as an HTTP date; of several, the first present wins.
   * Default: "retry-after".
   */
  retry_after_header?: string | string[];
  /**
   * Header(s) telling when the rate-limit window resets, read as reset_format. Of several, the first
   * present whose window is spent (its remaining header absent or 0) wins.
   */
  reset_header?: string | string[];
  /** Default: "epoch_seconds". */
  reset_format?: 'epoch_seconds' | 'epoch_ms' | 'seconds' | 'iso_date';
  /**
   * Header(s) telling how many requests are left in the window: above 0, its reset header is not a
   * reason to wait. A list pairs with reset_header by position (Linear's requests and complexity
   * budgets); a single name goes with every reset header.
   */
  remaining_header?: string | string[];
  /**
   * A JSONata expression over the response body: true (or non-empty) means the provider is
   * rate-limiting, whatever the status (Linear's RATELIMITED in a 400, Slack's ok: false with error
   * ratelimited in a 200). Such an answer is retried after the wait, even for a request that cannot be
   * repeated; the statuses in `statuses` are retried as well.
   */
  rate_limited?: Expression;
  /**
   * A JSONata expression over the body of an answer to retry, giving how many seconds to wait
   * (monday.com's retry_in_seconds), read before the headers.
   */
  wait_seconds?: Expression;
  /**
   * After a 429 or a rate_limited answer that says nothing of when to come back, wait this long
   * (Airtable blocks every request for 30 s after a 429) instead of backing off.
   */
  penalty_seconds?: number;
}

export type Pagination = PaginationCursor | PaginationNextUrl | PaginationOffset | PaginationPage;

export interface PageSize {
  param: string;
  value: number;
}

export interface PaginationCursor {
  type: 'cursor';
  /** Where the next cursor is in the response body; empty means the last page. */
  cursor: Expression;
  /** Query parameter that carries the cursor. Omit when the request body uses $cursor. */
  param?: string;
  page_size?: PageSize;
  stop?: Expression;
}

export interface PaginationNextUrl {
  type: 'next_url';
  from: 'body' | 'link_header';
  /** Where the next URL is in the body (from: body). */
  path?: Expression;
  page_size?: PageSize;
  stop?: Expression;
}

export interface PaginationOffset {
  type: 'offset';
  param: string;
  page_size: PageSize;
  stop?: Expression;
}

export interface PaginationPage {
  type: 'page';
  param: string;
  /** Default: 1. */
  start?: number;
  page_size?: PageSize;
  stop?: Expression;
}

export interface Sync {
  description?: string;
  /**
   * full: every run reads everything, and a record not seen is deleted. incremental: from the
   * checkpoint on.
   */
  mode: 'full' | 'incremental';
  /**
   * How often it runs on its own, e.g. 30s, 15m, 1h, 1d; an integration can set another (PATCH
   * /integration, sync_frequencies). Default: "1h".
   */
  frequency?: string;
  /**
   * Whether a new connection starts this sync on its own (at once, then every frequency). false: it
   * runs when triggered, or after POST /sync/start. Default: true.
   */
  auto_start?: boolean;
  request: RequestSpec;
  pagination?: Pagination;
  /**
   * Where the records are in a response body, e.g. data.items ($ for the body itself). An empty result
   * ends the sync: leave filtering to "filter".
   */
  records: Expression;
  /**
   * Keeps a provider record ($) when true, before the mapping (e.g. $not($exists(pull_request))). A
   * page whose records are all filtered out does not end the sync: only the pagination does.
   */
  filter?: Expression;
  /** Maps one provider record ($) to the output model. */
  mapping: Expression;
  model: {
    name: string;
    /**
     * The field of the mapped record that identifies it (a string or a number): a record without one
     * fails the run. Default: "id".
     */
    id?: string;
    /**
     * JSON Schema of the mapped record: each record is checked against it, and one that does not fit is
     * handled as "invalid_records" says.
     */
    schema?: object;
  };
  /** Incremental mode: what is remembered after each page and sent on the next run. */
  checkpoint?: {
    /** Computed from the page's mapped records ($) and the previous $checkpoint. */
    value: Expression;
    /** Query parameter that sends the checkpoint. Omit when the request body uses $checkpoint. */
    param?: string;
  };
  /**
   * What a run does with a mapped record that does not fit the model's schema: skip it (counted, with
   * the first examples, in the sync's status and the log) or fail the run. A record without an id, or
   * two records with one id in a page, always fail the run. Default: "skip".
   */
  invalid_records?: 'skip' | 'fail';
}

export interface Action {
  description?: string;
  /**
   * JSON Schema the action's input must match. Its pattern and patternProperties run on RE2, in linear
   * time: no lookarounds, no backreferences.
   */
  input: object;
  request: RequestSpec;
  /** Maps the response body ($) to the action's output (an object). */
  output?: Expression;
}

/**
 * A two-step auth: the credentials the end user gives (an API key, or a username and password such as a
 * key and secret) are exchanged at a token endpoint for a short-lived token, which every API request
 * then carries as ${access_token} (Authorization: Bearer by default). The exchange is made when the
 * connection is made (refused credentials are a 400 invalid_credentials), and made again before the
 * token expires, one at a time per connection like an OAuth refresh.
 */
export interface TokenExchange {
  /**
   * The exchange request: a path under api.base_url or an absolute URL. Its params and headers may name
   * connection_config fields and the credentials given (${api_key}; ${username}, ${password},
   * ${basic_auth}); its body is a JSONata expression with $credentials (the credentials given) and
   * $config (the connection's configuration). It carries no other credential.
   */
  request: RequestSpec;
  /**
   * How the body goes: JSON, or form-encoded (the body expression then gives an object of strings).
   * Default: "json".
   */
  format?: 'json' | 'form';
  /**
   * Where the token and its expiry are in the response (JSONata). A connection_config field with
   * from_token_response is filled from it too.
   */
  token_response: TokenResponse;
  /** How long before its expiry the token is exchanged again. Default: 300. */
  refresh_buffer_seconds?: number;
  /**
   * On a 401 from the API, exchange again once and send the request again (a session ended early).
   * Default: false.
   */
  refresh_on_401?: boolean;
}

/**
 * A JWT bearer grant: each connection holds a private key (createConnection credentials {"type":
 * "jwt_bearer", "issuer", "private_key", "key_id"?}, sealed like every credential). Terapi signs a
 * short JWT with it (RS256 or ES256) and exchanges it for an access token with the token_exchange
 * request, again before the token expires: a Google service account (the assertion posted to the token
 * endpoint), a GitHub App (the JWT as the bearer of the installation token request).
 */
export interface AuthJwtBearer {
  mode: 'jwt_bearer';
  /**
   * How the JWT is signed: RS256 with an RSA key, ES256 with a P-256 key (PEM, PKCS#8 or PKCS#1).
   * Default: "RS256".
   */
  algorithm?: 'RS256' | 'ES256';
  /**
   * The JWT's claims besides iat and exp (templates): e.g. iss: ${issuer}, aud, scope. They may name
   * connection_config fields, ${issuer} and ${key_id} (the connection's credentials). A claim whose
   * template renders to digits only is sent as a number (GitHub's iss, an app id).
   */
  claims: Record<string, Template>;
  /**
   * exp is iat plus this. iat is set 60 seconds in the past, against clocks that drift (GitHub's
   * advice); GitHub takes at most 600 seconds, Google 3600. Default: 3600.
   */
  lifetime_seconds?: number;
  /** What the connect UI calls the issuer, e.g. Service account email, App ID. */
  issuer_label?: string;
  /**
   * The request that trades the signed JWT for an access token: its templates name ${assertion} (the
   * JWT), ${issuer}, ${key_id} and connection_config; its body sees $assertion and $config.
   */
  token_exchange: TokenExchange;
}

/**
 * OAuth 1.0a (RFC 5849), for the few providers that still need it (Trello). The integration's
 * oauth_client_id and oauth_client_secret are the consumer key and secret. The connect flow gets a
 * request token, sends the end user to authorization_url, and trades the verifier for the connection's
 * token and token secret (createConnection takes them as {"type": "oauth1", "token", "token_secret"}).
 * Every API request is then signed with HMAC-SHA1 in its Authorization header, unless api.credentials
 * says otherwise.
 */
export interface AuthOAuth1 {
  mode: 'oauth1';
  request_token_url: Template;
  authorization_url: Template;
  access_token_url: Template;
  /** More query parameters of the authorization URL (Trello: name, scope, expiration). */
  authorization_params?: Record<string, Template>;
  /** Default: "HMAC-SHA1". */
  signature_method?: 'HMAC-SHA1';
}
