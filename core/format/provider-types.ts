/**
 * The provider format as the engine sees it after loading: the types of provider-types.generated.ts,
 * generated from schemas/provider.schema.json (`npm run generate`), with every expression compiled
 * and every template parsed; here only what the schema cannot say.
 */
import type { Auth, ProviderFile } from './provider-types.generated.ts';

export type * from './provider-types.generated.ts';

export type AuthMode = Auth['mode'];

export interface Provider extends ProviderFile {
  /** The file name without its extension. */
  name: string;
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
  oauth1: ['access_token', 'client_id'],
  oauth2_client_credentials: ['access_token', 'client_id'],
  api_key: ['api_key'],
  basic: ['username', 'password', 'basic_auth'],
  jwt_bearer: ['access_token'],
  none: [],
};
