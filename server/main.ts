/** The server as `terapi start` runs it, for `node --import tsx server/main.ts`. */
import { run } from './cli.ts';

await run(['start']);
