import type { ValidateFunction } from 'ajv';
import { freshValues, refreshesOn401, type Fresh } from '../auth/tokens.ts';
import { badRequest, notFound, reworded } from '../errors.ts';
import { evaluate } from '../format/evaluate.ts';
import { compileInputSchema } from '../format/provider-schema.ts';
import type { Action, Provider } from '../format/provider-types.ts';
import { own } from '../own.ts';
import { apiRequest, bodyError, requestRetry } from './provider-request.ts';
import { callProvider, providerFailed } from './send.ts';

/** A provider's action by name, or a 404 listing its actions. */
export function actionOf(provider: Provider, name: string): Action {
  const action = own(provider.actions, name);
  if (!action) throw notFound('unknown_action', `provider "${provider.name}" has no action "${name}"${provider.actions ? `; its actions are ${Object.keys(provider.actions).join(', ')}` : ''}`);
  return action;
}

const validators = new WeakMap<Action, ValidateFunction>();

/** Checks an action's input against its JSON Schema (compiled on the action's first run): a 400 naming each problem. */
export function checkActionInput(action: Action, name: string, input: Record<string, unknown>): void {
  let validate = validators.get(action);
  if (!validate) validators.set(action, (validate = compileInputSchema(action.input)));
  if (!validate(input)) {
    const problems = (validate.errors ?? []).map((e) => `input${e.instancePath.replace(/\//g, '.')} ${e.message}`).join('; ');
    throw badRequest('invalid_input', `the input of action "${name}" does not match its schema: ${problems}`);
  }
}

/**
 * Runs an action with fresh credentials (triggerAction, and `terapi dryrun --action`): its request
 * built by its templates and JSONata body, sent (again once after a refresh, where the provider
 * refreshes on 401 and `refresh` is given), and its output mapped. Provider text in any error
 * is scrubbed of the connection's secrets.
 */
export async function sendAction(fresh: Fresh, name: string, action: Action, input: Record<string, unknown>, refresh?: (stale: Fresh) => Promise<Fresh>): Promise<Record<string, unknown>> {
  const provider = fresh.provider;
  const send = async (with_: Fresh) => {
    const values = { ...freshValues(with_), input };
    const json = action.request.body ? await evaluate(action.request.body, input, { input, config: with_.record.connection_config }) : undefined;
    const { retry, options } = requestRetry(provider, action.request, false);
    return callProvider(apiRequest(provider, values, action.request, { json }), retry, options);
  };
  try {
    let res = await send(fresh);
    // A provider whose sessions can end early (refresh_on_401): one refresh, one more try.
    if (refresh && refreshesOn401(fresh, res.status)) res = await send((fresh = await refresh(fresh)));
    if (res.status >= 400) {
      throw providerFailed(`${provider.display_name} answered HTTP ${res.status} to action "${name}": ${fresh.scrub(res.text.slice(0, 10_000)).slice(0, 300)}`);
    }
    const failed = await bodyError(provider, action.request, res.body, fresh.scrub);
    if (failed) throw providerFailed(`${provider.display_name} answered action "${name}" with an error: ${failed}`);
    const output = action.output ? await evaluate(action.output, res.body, { input }) : res.body;
    return (output && typeof output === 'object' && !Array.isArray(output) ? output : { result: output ?? null }) as Record<string, unknown>;
  } catch (e) {
    // Provider text in any error (a body, an expression's message) may repeat the credentials.
    throw reworded(e, fresh.scrub);
  }
}
