// The file worker threads start from: TypeScript is loaded through tsx in each thread, whether or
// not the process itself was started with `--import tsx` (the `terapi` command registers it in code).
const { register } = await import('tsx/esm/api');
register();
const { default: work } = await import('./worker.ts');
export default work;
