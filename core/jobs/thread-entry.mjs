// The file worker threads start from: TypeScript is loaded through tsx in each thread, whether or
// not the process itself was started with `--import tsx` (the `terapi` command registers it in
// code); then the module the pool names in its workerData, whose default export works the tasks.
import { workerData } from 'node:worker_threads';

const { register } = await import('tsx/esm/api');
register();
const { default: work } = await import(workerData.module);
export default work;
