// Compiles a JavaScript executor into a component:
//   node build.mjs executor.js out.wasm wit-dir [root]
// `executor.js` exports `executor` (from `serve(Class)`) and may import
// modules by relative path (the SDK, its own helpers). The script runs from
// wherever the `@bytecodealliance/componentize-js` package is installed
// (the Makefile copies it next to target/js-tools/node_modules).
// The component imports only what the contract allows: WASI's http and
// fetch-event are left out (an executor has no network), so the host's
// linker never sees an import it does not provide.
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

const [source, out, wit, root] = process.argv.slice(2);
if (!source || !out || !wit) {
  console.error('usage: node build.mjs EXECUTOR.js OUT.wasm WIT_DIR [ROOT]');
  process.exit(2);
}
const witPath = resolve(wit);
const sourcePath = resolve(source);
const outPath = resolve(out);
// componentize-js lets the module see only the current directory's subtree
// (mapped to `/`) and resolves relative imports inside it: run from `root`,
// a directory holding the executor and every module it imports (default:
// the executor's own directory, where a scaffold keeps its copy of the SDK).
process.chdir(resolve(root ?? dirname(sourcePath)));
try {
  const { component } = await componentize({
    sourcePath,
    witPath,
    worldName: 'executor-world',
    disableFeatures: ['http', 'fetch-event'],
  });
  await mkdir(dirname(outPath), { recursive: true });
  await writeFile(outPath, component);
} catch (e) {
  console.error(`componentize ${source} (wit ${witPath}) failed: ${e.message ?? e}`);
  process.exit(1);
}
