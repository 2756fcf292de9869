/**
 * The provider format as the engine sees it after loading: schemas/provider.schema.json is the
 * contract, and these types mirror it, with every expression compiled and every template parsed.
 */
import type { Expression } from '../expression/expression.ts';
import type { Template } from './template.ts';

export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
export type ClientAuth = 'body' | 'basic';

export interface TokenResponse {
  access_token?: Expression;
  refresh_token?: Expression;
  expires_in?: Expression;
  expires_at?: Expression;
  metadata?: Record<string, Expression>;
}

export interface Revocation {
  url: Template;
  method?: Method;
  token?: 'access_token' | 'refresh_token';
  client_auth?: ClientAuth;
  format?: 'form' | 'json';
  token_param?: string;
  on_reconnect?: boolean;
}

export interface OAuth2Auth {
  mode: 'oauth2';
  authorization_url: Template;
  token_url: Template;
  refresh_url?: Template;
  issuer?: string;
  scopes?: string[];
  scope_separator?: string;
  scope_param?: string;
  authorization_params?: Record<string, Template>;
  token_params?: Record<string, string>;
  refresh_params?: Record<string, string>;
  pkce?: boolean;
  client_auth?: ClientAuth;
  token_request_format?: 'form' | 'json';
  token_response?: TokenResponse;
  refresh_buffer_seconds?: number;
  revocation?: Revocation;
}

export interface ClientCredentialsAuth {
  mode: 'oauth2_client_credentials';
  token_url: Template;
  scopes?: string[];
  scope_separator?: string;
  token_params?: Record<string, string>;
  client_auth?: ClientAuth;
  token_request_format?: 'form' | 'json';
  token_response?: TokenResponse;
  refresh_buffer_seconds?: number;
}

export interface ApiKeyAuth {
  mode: 'api_key';
  label?: string;
  pattern?: string;
}
export interface BasicAuth {
  mode: 'basic';
  username_label?: string;
  password_label?: string;
  password_optional?: boolean;
}
export interface NoAuth {
  mode: 'none';
}

export type Auth = OAuth2Auth | ClientCredentialsAuth | ApiKeyAuth | BasicAuth | NoAuth;
export type AuthMode = Auth['mode'];

export interface ConfigField {
  description?: string;
  pattern: string;
  format?: 'text' | 'url';
  example?: string;
  optional?: boolean;
  from_token_response?: Expression;
}

export interface RequestSpec {
  method?: Method;
  path: Template;
  params?: Record<string, Template>;
  headers?: Record<string, Template>;
  body?: Expression;
}

export interface Retry {
  statuses?: number[];
  max_attempts?: number;
  retry_after_header?: string;
  reset_header?: string;
  reset_format?: 'epoch_seconds' | 'epoch_ms' | 'seconds' | 'iso_date';
  remaining_header?: string;
}

export interface Api {
  base_url: Template;
  headers?: Record<string, Template>;
  credentials?: { in: 'header' | 'query'; name: string; value: Template };
  retry?: Retry;
  timeout_seconds?: number;
}

export interface PageSize {
  param: string;
  value: number;
}

export type Pagination =
  | { type: 'cursor'; cursor: Expression; param?: string; page_size?: PageSize; stop?: Expression }
  | { type: 'next_url'; from: 'body' | 'link_header'; path?: Expression; page_size?: PageSize; stop?: Expression }
  | { type: 'offset'; param: string; page_size: PageSize; stop?: Expression }
  | { type: 'page'; param: string; start?: number; page_size?: PageSize; stop?: Expression };

export interface Sync {
  description?: string;
  mode: 'full' | 'incremental';
  frequency?: string;
  auto_start?: boolean;
  request: RequestSpec;
  pagination?: Pagination;
  records: Expression;
  filter?: Expression;
  mapping: Expression;
  model: { name: string; id?: string; schema?: object };
  invalid_records?: 'skip' | 'fail';
  checkpoint?: { value: Expression; param?: string };
}

export interface Action {
  description?: string;
  input: object;
  request: RequestSpec;
  output?: Expression;
}

export interface Provider {
  /** The file name without its extension. */
  name: string;
  display_name: string;
  /** An https: or data:image URL of the provider's logo (the connect UI, the dashboard). */
  logo?: string;
  categories: string[];
  docs: string;
  references?: string[];
  auth: Auth;
  connection_config?: Record<string, ConfigField>;
  post_connection?: { request: RequestSpec; config?: Record<string, Expression>; metadata?: Record<string, Expression> };
  verification?: { request: RequestSpec };
  api: Api;
  syncs?: Record<string, Sync>;
  actions?: Record<string, Action>;
  /** The files this provider was assembled from, built-in first. */
  files: string[];
  /**
   * Their texts, one per layer: `loadCatalog(sources.map((s) => [s]))` loads this provider again
   * exactly (a worker thread does, from what a task carries).
   */
  sources: { file: string; text: string }[];
}

/** Variables that credentials bring to templates, by auth mode. */
export const CREDENTIAL_VARIABLES: Record<AuthMode, string[]> = {
  oauth2: ['access_token', 'client_id'],
  oauth2_client_credentials: ['access_token', 'client_id'],
  api_key: ['api_key'],
  basic: ['username', 'password', 'basic_auth'],
  none: [],
};
