// Write jina-wasm executors in JavaScript, in Jina's style.
//
// An executor is a class extending `Executor`: its constructor takes the
// `with:` parameters as one object, and methods marked with `requests` handle
// endpoints. `serve(Class)` turns it into the `executor` export of the
// `jina:executor/executor-world@0.1.0` world; componentize-js compiles the
// module, this SDK and the StarlingMonkey engine into one component
// (docs/javascript-executors.md):
//
//   import { Executor, Document, requests, serve } from './jina-executor.js';
//
//   class Upper extends Executor {
//     constructor({ suffix = '' } = {}) { super(); this.suffix = suffix; }
//     upper(docs, parameters) {
//       for (const doc of docs) if (doc.text !== undefined) doc.text = doc.text.toUpperCase() + this.suffix;
//     }
//   }
//   requests(Upper.prototype.upper, { on: '/upper' });
//   export const executor = serve(Upper);
//
// The host's facts about the instance (shard, replica, read-only, durable,
// memory limit) are `this.runtimeArgs` (a `RuntimeArgs`), as Jina's
// `runtime_args`; they never appear among the `with:` parameters.
//
// The columnar batch of the contract (guest-sdk/src/wire.rs specifies it;
// this is the same reader and writer) is converted at one seam, `fromBatch`
// / `toBatch`; handlers only see `Document` trees.

/** One named score of a document (Jina's `NamedScore`). */
export class NamedScore {
  constructor(value = 0, opName = undefined, description = undefined) {
    this.value = value;
    this.opName = opName;
    this.description = description;
  }
}

/**
 * Jina's document. Absent fields are `undefined`; `embedding` is an array of
 * numbers (32-bit floats across the boundary), `tags` an object that
 * serialises to JSON, `scores` an object of `NamedScore`s by name, `chunks`
 * and `matches` arrays of `Document`s.
 */
export class Document {
  constructor(fields = {}) {
    this.id = fields.id ?? '';
    this.text = fields.text;
    this.blob = fields.blob;
    this.uri = fields.uri;
    this.mimeType = fields.mimeType;
    this.embedding = fields.embedding;
    this.tags = fields.tags ?? {};
    this.scores = fields.scores ?? {};
    this.chunks = fields.chunks ?? [];
    this.matches = fields.matches ?? [];
  }
}

const KINDS = ['bad-request', 'bad-config', 'read-only', 'io', 'internal', 'capacity'];

/**
 * A failure the host receives with its kind: `bad-request`, `bad-config`,
 * `read-only`, `io`, `internal` or `capacity` (the executor is full: the
 * request would pass a limit it was given, such as `this.runtimeArgs.memoryLimit`;
 * apply none of it). Anything else a handler throws reaches the
 * host as `internal` with its name and message.
 */
export class ExecutorError extends Error {
  constructor(kind, message) {
    if (!KINDS.includes(kind)) throw new TypeError(`unknown error kind ${JSON.stringify(kind)}: expected one of ${KINDS.join(', ')}`);
    super(message);
    this.kind = kind;
  }
  static badRequest(message) { return new ExecutorError('bad-request', message); }
  static badConfig(message) { return new ExecutorError('bad-config', message); }
  static capacity(message) { return new ExecutorError('capacity', message); }
}

/**
 * Marks `method` as the handler of `on` (an endpoint such as `'/index'`, or
 * an array of them), or of every endpoint no other handler names when `on`
 * is omitted. A handler is called as `handler(docs, parameters)` and returns
 * the documents to pass on, or `undefined` when it changed `docs` in place.
 * `doc`, one line, describes the endpoint(s) to the host (`jina-wasm
 * inspect`, the gateway's `/openapi.json`).
 */
export function requests(method, { on, doc } = {}) {
  if (typeof method !== 'function') throw new TypeError('requests(method, { on }): method must be a function');
  const list = method.jinaRequestsOn ?? (method.jinaRequestsOn = []);
  if (on === undefined) list.push(null);
  else list.push(...(Array.isArray(on) ? on : [on]));
  if (doc !== undefined) method.jinaDoc = String(doc);
  return method;
}

/**
 * `value` as an integer when it is a whole number (`3` and `3.0` are one
 * number in JavaScript, so a whole double from Jina's Python client passes);
 * `undefined` and `null` stay `undefined`. Anything else (`3.5`, `'3'`)
 * throws an `ExecutorError` of `kind` naming `name` (`with.min_len`).
 */
export function wholeNumber(value, name, kind = 'bad-config') {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'number' && Number.isInteger(value)) return value;
  throw new ExecutorError(kind, `${name} = ${JSON.stringify(value)}: expected a whole number`);
}

/**
 * A request's parameters: the JSON object the client sent, with one typed
 * getter that is not an own enumerable key (so `Object.keys`, spreading and
 * `JSON.stringify` see only the client's keys).
 */
function withGetters(parameters) {
  Object.defineProperty(parameters, 'getInt', {
    enumerable: false,
    value(key, fallback = undefined) {
      const value = wholeNumber(this[key], `parameters.${key}`, 'bad-request');
      return value === undefined ? fallback : value;
    },
  });
  return parameters;
}

/**
 * What the host says about this instance (Jina's `runtime_args`):
 * `shardId`/`shards` for a shard of a Pod, `replicaId` (a string)/`replicas`
 * for a replica, `readOnly` (the workspace is read-only, `dump` is never
 * called), `durable` (`dump` runs after every request), `memoryLimit` (bytes,
 * or `undefined`). They inform the executor; the host enforces what matters
 * itself (a read-only mount, one workspace per shard, a memory limit that
 * traps), so a wrong value harms only the executor that trusts it.
 */
export class RuntimeArgs {
  constructor(facts = {}) {
    const f = facts !== null && typeof facts === 'object' && !Array.isArray(facts) ? facts : {};
    const count = (key) => (Number.isInteger(f[key]) && f[key] >= 0 ? f[key] : undefined);
    this.shardId = count('shard_id');
    this.shards = count('shards');
    const replica = f.replica_id;
    this.replicaId = typeof replica === 'string' || typeof replica === 'number' ? String(replica) : undefined;
    this.replicas = count('replicas');
    this.readOnly = f.read_only === true;
    this.durable = f.durable === true;
    this.memoryLimit = count('memory_limit');
    Object.freeze(this);
  }
}

// The facts of the instance being built: set by `serve`'s `init` around the
// constructor call, read by the `Executor` constructor.
let buildingRuntimeArgs;

/**
 * Base class of every JavaScript executor. `this.runtimeArgs` (a
 * `RuntimeArgs`) is set by this constructor, so a subclass can read it right
 * after `super()`.
 */
export class Executor {
  constructor() {
    this.runtimeArgs = buildingRuntimeArgs ?? new RuntimeArgs();
  }

  /** Persists state into `/workspace`; nothing to do by default. */
  dump() {}
  /** Called once before the instance is dropped. */
  close() {}
}

/** One printable line of at most 1024 UTF-8 bytes (what the host accepts as a doc). */
function oneLine(text) {
  let line = String(text ?? '').split('\n')[0].replace(/[\u0000-\u001f\u007f-\u009f]/g, '').trim();
  while (utf8Length(line) > 1024) line = line.slice(0, -1);
  return line;
}

/**
 * What `Class` declares to the host (contract 0.2.0's `endpoints`): each
 * endpoint a marked method names (`__default__` for one without `on`), with
 * that method's `doc`.
 */
function declaredOf(Class, routes) {
  const out = [];
  for (const [endpoint, name] of routes) {
    out.push({ name: endpoint ?? '__default__', doc: oneLine(Class.prototype[name]?.jinaDoc) });
  }
  return out;
}

/** `Map(endpoint or null -> method name)` over the class chain, subclasses winning. */
function routesOf(Class) {
  const chain = [];
  for (let proto = Class.prototype; proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) chain.unshift(proto);
  const routes = new Map();
  for (const proto of chain) {
    for (const name of Object.getOwnPropertyNames(proto)) {
      const value = Object.getOwnPropertyDescriptor(proto, name).value;
      if (typeof value === 'function' && value.jinaRequestsOn) {
        for (const endpoint of value.jinaRequestsOn) routes.set(endpoint, name);
      }
    }
  }
  return routes;
}

/** The WIT `error` record for anything thrown. */
function describe(error) {
  if (error instanceof ExecutorError) return { kind: error.kind, message: error.message };
  if (error instanceof Error) return { kind: 'internal', message: `${error.name}: ${error.message}` };
  return { kind: 'internal', message: `thrown: ${String(error)}` };
}

function jsonObject(text, what, kind) {
  let value;
  try {
    value = text ? JSON.parse(text) : {};
  } catch (e) {
    throw new ExecutorError(kind, `${what} is not valid JSON: ${e.message}`);
  }
  if (value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new ExecutorError(kind, `${what} must be a JSON object`);
  return value;
}

/**
 * The `executor` export for `Class`: builds one instance in `init` from the
 * `with:` object and dispatches `handle` to the marked methods. Endpoints
 * without a handler pass the batch on untouched.
 */
export function serve(Class) {
  const routes = routesOf(Class);
  let instance;
  const guard = (f) => {
    try {
      return f();
    } catch (e) {
      // componentize-js turns a thrown value into the `err` of a `result`.
      throw describe(e);
    }
  };
  const declared = declaredOf(Class, routes);
  return {
    endpoints() {
      // May come before `init`: from the class alone.
      return declared;
    },
    init(config) {
      guard(() => {
        const { jina, ...user } = jsonObject(config, 'with', 'bad-config');
        // The host's facts travel under `jina` (docs/wit-contract.md).
        buildingRuntimeArgs = new RuntimeArgs(jina);
        try {
          instance = new Class(user);
        } finally {
          buildingRuntimeArgs = undefined;
        }
      });
    },
    handle(endpoint, batch, parameters) {
      const name = routes.get(endpoint) ?? routes.get(null);
      if (name === undefined) return batch;
      return guard(() => {
        const docs = fromBatch(batch);
        const result = instance[name](docs, withGetters(jsonObject(parameters, 'parameters', 'bad-request')));
        return toBatch(result === undefined ? docs : result);
      });
    },
    dump() {
      guard(() => instance.dump());
    },
    close() {
      try { instance?.close(); } catch (_) { /* nothing is called after close */ }
    },
  };
}

// ---- the batch codec --------------------------------------------------------

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

function bad(column, index, what) {
  return ExecutorError.badRequest(`batch ${column}[${index}]: ${what}`);
}

function checkLen(column, length, n) {
  if (length !== n) {
    throw bad(column, Math.min(length, n), `${length < n ? 'missing' : 'extra entry'}: the column has ${length} entries for ${n} documents`);
  }
}

/** UTF-8 length of a well-formed string, without encoding it. */
function utf8Length(s) {
  let bytes = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80) bytes += c >= 0x800 && (c < 0xd800 || c > 0xdfff) ? 2 : 1;
  }
  return bytes;
}

/** Entries of a packed (optional) column: strings, or bytes when `data` is bytes; `undefined` where absent. */
function unpack(column, data, ends, n, present) {
  checkLen(`${column}.ends`, ends.length, n);
  if (present) checkLen(`${column}.present`, present.length, n);
  const isString = typeof data === 'string';
  // ASCII data: byte offsets are string offsets, slice the string directly.
  const ascii = isString && utf8Length(data) === data.length;
  const raw = isString && !ascii ? encoder.encode(data) : data;
  if (n && ends[n - 1] !== raw.length) throw bad(column, n - 1, `the last end is ${ends[n - 1]} but the data has ${raw.length} bytes`);
  const out = new Array(n);
  let start = 0;
  for (let i = 0; i < n; i++) {
    const end = ends[i];
    if (end < start) throw bad(column, i, `ends decrease (${end} after ${start})`);
    if (present && !present[i]) {
      if (end !== start) throw bad(column, i, 'absent entry has a non-empty span');
      out[i] = undefined;
    } else if (ascii) {
      out[i] = data.slice(start, end);
    } else if (isString) {
      try {
        out[i] = decoder.decode(raw.subarray(start, end));
      } catch (_) {
        throw bad(column, i, 'span does not fall on a UTF-8 boundary');
      }
    } else {
      out[i] = Uint8Array.from(raw.subarray(start, end));
    }
    start = end;
  }
  return out;
}

/** The document trees of a batch. */
export function fromBatch(batch) {
  const n = batch.ids.ends.length;
  const ids = unpack('ids', batch.ids.data, batch.ids.ends, n);
  const col = (name, c) => unpack(name, c.data, c.ends, n, c.present);
  const texts = col('texts', batch.texts);
  const blobs = col('blobs', batch.blobs);
  const uris = col('uris', batch.uris);
  const mimes = col('mime-types', batch.mimeTypes);
  const tags = col('tags', batch.tags);
  checkLen('parents', batch.parents.length, n);
  checkLen('relations', batch.relations.length, n);
  checkLen('embedding-dims', batch.embeddingDims.length, n);
  const nodes = new Array(n);
  const roots = [];
  const embeddings = batch.embeddings;
  let offset = 0;
  for (let i = 0; i < n; i++) {
    let tag = {};
    if (tags[i] !== undefined) {
      try {
        tag = JSON.parse(tags[i]);
      } catch (e) {
        throw bad('tags', i, `tags are not valid JSON: ${e.message}`);
      }
      if (tag === null || typeof tag !== 'object' || Array.isArray(tag)) throw bad('tags', i, 'tags must be a JSON object');
    }
    const dim = batch.embeddingDims[i];
    let embedding;
    if (dim) {
      if (offset + dim > embeddings.length) throw bad('embedding-dims', i, `dim ${dim} at offset ${offset} runs past the ${embeddings.length} embedding values`);
      embedding = Array.from(embeddings.subarray ? embeddings.subarray(offset, offset + dim) : embeddings.slice(offset, offset + dim));
      offset += dim;
    }
    const doc = new Document({ id: ids[i], text: texts[i], blob: blobs[i], uri: uris[i], mimeType: mimes[i], embedding, tags: tag });
    nodes[i] = doc;
    const parent = batch.parents[i];
    const relation = batch.relations[i];
    if (parent === undefined || parent === null) {
      if (relation !== 'root') throw bad('relations', i, `relation ${relation} needs a parent`);
      roots.push(doc);
    } else if (relation === 'root') {
      throw bad('relations', i, 'relation root must not have a parent');
    } else if (parent >= i) {
      throw bad('parents', i, `parent index ${parent} does not come before the document`);
    } else if (relation === 'chunk') {
      nodes[parent].chunks.push(doc);
    } else {
      nodes[parent].matches.push(doc);
    }
  }
  if (offset !== embeddings.length) throw ExecutorError.badRequest(`batch embedding-dims sum to ${offset} but embeddings has ${embeddings.length} values`);
  batch.scores.forEach((s, k) => {
    if (s.doc >= n) throw bad('scores', k, `doc ${s.doc} is out of range for ${n} documents`);
    nodes[s.doc].scores[s.name] = new NamedScore(s.value, s.opName, s.description);
  });
  return roots;
}

/** A packed column being written. */
class Column {
  constructor(binary = false) {
    this.binary = binary;
    this.pieces = [];
    this.ends = [];
    this.present = [];
    this.length = 0;
  }
  push(value) {
    if (value === undefined || value === null) {
      this.present.push(false);
    } else {
      this.present.push(true);
      this.length += this.binary ? value.length : utf8Length(value);
      this.pieces.push(value);
    }
    this.ends.push(this.length);
  }
  data() {
    if (!this.binary) return this.pieces.join('');
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const piece of this.pieces) { out.set(piece, at); at += piece.length; }
    return out;
  }
  optional() { return { present: this.present, data: this.data(), ends: Uint32Array.from(this.ends) }; }
}

/** The batch of a list of document trees, in depth-first pre-order. */
export function toBatch(roots) {
  if (!Array.isArray(roots)) throw new ExecutorError('internal', 'a handler returned something other than an array of Documents');
  const ids = new Column(), texts = new Column(), blobs = new Column(true), uris = new Column(), mimes = new Column(), tags = new Column();
  const parents = [], relations = [], dims = [], embeddings = [], scores = [];
  const stack = roots.map((doc) => [doc, undefined, 'root']).reverse();
  while (stack.length) {
    const [doc, parent, relation] = stack.pop();
    if (!(doc instanceof Document)) throw new ExecutorError('internal', `a handler returned ${typeof doc}, not a Document`);
    const index = parents.length;
    parents.push(parent);
    relations.push(relation);
    ids.push(doc.id);
    texts.push(doc.text);
    blobs.push(doc.blob);
    uris.push(doc.uri);
    mimes.push(doc.mimeType);
    tags.push(Object.keys(doc.tags).length ? JSON.stringify(doc.tags) : undefined);
    const embedding = doc.embedding ?? [];
    dims.push(embedding.length);
    for (const x of embedding) embeddings.push(x);
    for (const name of Object.keys(doc.scores).sort()) {
      const s = doc.scores[name];
      scores.push({ doc: index, name, value: s.value, opName: s.opName, description: s.description });
    }
    for (let k = doc.matches.length - 1; k >= 0; k--) stack.push([doc.matches[k], index, 'match']);
    for (let k = doc.chunks.length - 1; k >= 0; k--) stack.push([doc.chunks[k], index, 'chunk']);
  }
  return {
    ids: { data: ids.data(), ends: Uint32Array.from(ids.ends) },
    parents,
    relations,
    texts: texts.optional(),
    blobs: blobs.optional(),
    uris: uris.optional(),
    mimeTypes: mimes.optional(),
    tags: tags.optional(),
    embeddingDims: Uint32Array.from(dims),
    embeddings: new Float32Array(embeddings),
    scores,
  };
}
