import type { Context, Middleware, Next } from 'koa';

interface HotRoute {
  method: string;
  path: string;
  pattern: RegExp;
  names: string[];
  run: (ctx: Context) => Promise<unknown>;
}

/**
 * The hottest reads (GET /auth/token, GET /connection/{id}: apps read a token before their calls
 * to the provider), matched ahead of @koa/router, which tests every route's pattern, reads the
 * Host header and composes the matched route's middleware anew on every request (a tenth of a
 * token read, bench/api.ts). Here each route's middleware is composed once, when it is added.
 *
 * A route is also added to the router, which keeps answering everything these patterns do not
 * take exactly: another method (HEAD, OPTIONS, 405), another case, a trailing slash, a part that
 * does not decode. So the answers are the router's in every case; only the way there is shorter.
 */
export class HotRoutes {
  private readonly routes: HotRoute[] = [];

  /** `path` in the router's syntax, with `:name` parameters only. */
  add(method: string, path: string, stack: Middleware[]): void {
    if (!/^[a-z/_:]+$/.test(path)) throw new Error(`hot route ${path}: only letters, /, _ and :parameters`);
    const names = [...path.matchAll(/:([a-z_]+)/g)].map((m) => m[1]);
    const pattern = new RegExp(`^${path.replace(/:[a-z_]+/g, '([^/]+)')}$`);
    this.routes.push({ method, path, pattern, names, run: composed(stack) });
  }

  middleware(): Middleware {
    return (ctx, next) => {
      const path = ctx.path;
      for (const route of this.routes) {
        if (route.method !== ctx.method) continue;
        const match = route.pattern.exec(path);
        if (!match) continue;
        const params: Record<string, string> = {};
        for (let i = 0; i < route.names.length; i++) {
          // As the router decodes them; a part it would keep undecoded is left to it.
          try {
            params[route.names[i]] = decodeURIComponent(match[i + 1]);
          } catch {
            return next();
          }
        }
        ctx.params = params;
        // What the router records of the route it took (a metrics label reads it).
        (ctx as { _matchedRoute?: string; routerPath?: string })._matchedRoute = route.path;
        (ctx as { routerPath?: string }).routerPath = route.path;
        return route.run(ctx);
      }
      return next();
    };
  }
}

/**
 * The middleware in order, as one; the last one's `next` does nothing (a route ends the request).
 * Without a closure made per step and request (tsx names each one it makes, a property write).
 */
function composed(stack: Middleware[]): (ctx: Context) => Promise<unknown> {
  const done: Next = () => Promise.resolve();
  return stack.reduceRight<(ctx: Context) => Promise<unknown>>(
    (after, middleware) => (ctx) => Promise.resolve(middleware(ctx, after === finish ? done : after.bind(null, ctx) as Next)),
    finish,
  );
}
const finish = () => Promise.resolve();
