// `{{name}}`: a jina-wasm executor. Endpoint `/upper`: upper-cases each
// document's text and appends `with: {suffix: ...}` (default empty).

import { Executor, requests, serve } from './jina-executor.js';

class {{class}} extends Executor {
  constructor({ suffix = '' } = {}) {
    super();
    this.suffix = suffix;
  }

  upper(docs, parameters) {
    for (const doc of docs) {
      if (doc.text !== undefined) doc.text = doc.text.toUpperCase() + this.suffix;
    }
  }
}
requests({{class}}.prototype.upper, { on: '/upper', doc: "Upper-case each document's text and append the suffix" });

export const executor = serve({{class}});
