"""The jina-wasm wire protocol, version 1, in stdlib-only Python.

Written from docs/protocol.md alone, to show a peer in another language can
implement it from the page. A message is two ZeroMQ frames: an envelope and a
body. This module encodes and decodes each frame; it knows nothing of sockets.

    encode_envelope(dict) -> bytes      decode_envelope(bytes) -> dict
    encode_body(docs) -> bytes          decode_body(bytes) -> list of documents

An envelope is a dict:

    {"kind": 0, "after_error": 0, "request_id": "r1", "endpoint": "/index",
     "parameters": "", "deadline": 0,
     "status": None,    # success; or {"executor", "kind", "message"} for an error
     "parts": [2],
     "routes": [{"pea": "encoder", "start": 1, "end": 2, "outcome": 0}]}

A document is a dict in Jina JSON style; only "id" is required:

    {"id": "a", "text": "hi", "blob": b"\\x00", "uri": "...", "mime_type": "...",
     "embedding": [1.0, -0.5],   # sent as f32
     "tags": {"k": 1},           # sent as compact JSON text
     "scores": {"cosine": {"value": 0.25, "op_name": "...", "description": "..."}},
     "chunks": [...], "matches": [...]}

The decoders return exactly the keys that are present on the wire: "id" always,
the others only when present ("embedding" only when it has values, "scores",
"chunks" and "matches" only when not empty). On malformed input they raise
ValueError and nothing else (UnsupportedVersion, a ValueError, for an envelope
of another protocol version).
"""

from __future__ import annotations

import json
import struct

__all__ = [
    "VERSION", "MAX_ENVELOPE", "UnsupportedVersion",
    "KIND_DATA", "KIND_CONTROL_REQUEST", "KIND_CONTROL_REPLY",
    "encode_envelope", "decode_envelope", "encode_body", "decode_body",
    "annotate_envelope", "annotate_body",
]

MAGIC = b"JW"
VERSION = 1
MAX_ENVELOPE = 1 << 20  # "Receivers refuse an envelope over 1 MiB."
TRACE_TAG = 1  # the optional trace field after the routes
NO_PARENT = 0xFFFF_FFFF  # the parent of a root

KIND_DATA, KIND_CONTROL_REQUEST, KIND_CONTROL_REPLY = 0, 1, 2
KINDS = {0: "data", 1: "control request", 2: "control reply"}
AFTER_ERROR = {0: "continue", 1: "skip executors", 2: "skip handling", 3: "abort"}
OUTCOMES = {0: "handled", 1: "executor failed", 2: "skipped", 3: "routed"}
RELATIONS = {0: "root", 1: "chunk", 2: "match"}
ROOT, CHUNK, MATCH = 0, 1, 2

U8_MAX, U32_MAX, U64_MAX = 0xFF, 0xFFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF

# The optional columns, in wire order, with the document key each one carries.
OPTIONAL_COLUMNS = (
    ("texts", "text"),
    ("blobs", "blob"),
    ("uris", "uri"),
    ("mime types", "mime_type"),
    ("tags", "tags"),
)
TEXT_COLUMNS = {"texts", "uris", "mime types", "tags"}  # UTF-8; blobs are any bytes


class UnsupportedVersion(ValueError):
    """An envelope of a protocol version this module does not speak.

    The spec says a receiver stops reading at the version byte; a Pea's control
    socket answers such a request with status kind "version".
    """

    def __init__(self, version: int):
        super().__init__(f"envelope: unsupported protocol version {version} (this is version {VERSION})")
        self.version = version


# --------------------------------------------------------------------------
# Reading


class _Reader:
    """Reads fields from one frame; every shortfall is a ValueError.

    Counts read from the frame are checked against the bytes left before
    anything of that size is built, so a forged count cannot make the
    decoder allocate more than the frame's length allows.
    """

    def __init__(self, data: bytes, frame: str):
        self.data = data
        self.pos = 0
        self.frame = frame

    def fail(self, message: str) -> ValueError:
        return ValueError(f"{self.frame}: {message}")

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int, field: str) -> bytes:
        if size > self.left():
            raise self.fail(f"truncated: {field} needs {size} bytes, {self.left()} left")
        out = self.data[self.pos:self.pos + size]
        self.pos += size
        return out

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u32(self, field: str) -> int:
        return struct.unpack("<I", self.take(4, field))[0]

    def u64(self, field: str) -> int:
        return struct.unpack("<Q", self.take(8, field))[0]

    def f64(self, field: str) -> float:
        return struct.unpack("<d", self.take(8, field))[0]

    def u8s(self, count: int, field: str) -> bytes:
        return self.take(count, field)

    def u32s(self, count: int, field: str) -> tuple[int, ...]:
        raw = self.take(4 * count, field)  # checks the length first
        return struct.unpack(f"<{count}I", raw)

    def f32s(self, count: int, field: str) -> list[float]:
        raw = self.take(4 * count, field)
        return list(struct.unpack(f"<{count}f", raw))

    def utf8(self, raw: bytes, field: str) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"{field} is not valid UTF-8 ({e.reason} at byte {e.start})") from None

    def str(self, field: str) -> str:
        size = self.u32(f"{field} length")
        return self.utf8(self.take(size, field), field)

    def opt_str(self, field: str) -> str | None:
        flag = self.u8(f"{field} flag")
        if flag == 0:
            return None
        if flag != 1:
            raise self.fail(f"{field} flag is {flag}, not 0 or 1")
        return self.str(field)

    def enum(self, field: str, names: dict[int, str]) -> int:
        value = self.u8(field)
        if value not in names:
            raise self.fail(f"{field} is {value}, not one of {sorted(names)}")
        return value

    def finish(self) -> None:
        if self.left():
            raise self.fail(f"{self.left()} bytes left over after the last field")


def _as_bytes(frame) -> bytes:
    if isinstance(frame, bytes):
        return frame
    if isinstance(frame, (bytearray, memoryview)):
        return bytes(frame)
    raise TypeError(f"a frame is bytes, not {type(frame).__name__}")


def decode_envelope(frame: bytes) -> dict:
    """Decodes an envelope frame; raises ValueError if it is malformed."""
    r = _Reader(_as_bytes(frame), "envelope")
    if len(r.data) > MAX_ENVELOPE:
        raise r.fail(f"{len(r.data)} bytes, over the 1 MiB limit")
    magic = r.take(2, "magic")
    if magic != MAGIC:
        raise r.fail(f"bad magic {magic.hex(' ')}, expected 4a 57")
    version = r.u8("version")
    if version != VERSION:
        raise UnsupportedVersion(version)  # stop reading here, as the spec says
    env = {
        "kind": r.enum("kind", KINDS),
        "after_error": r.enum("after_error", AFTER_ERROR),
        "request_id": r.str("request_id"),
        "endpoint": r.str("endpoint"),
        "parameters": r.str("parameters"),
        "deadline": r.u64("deadline"),
    }
    code = r.u8("status code")
    if code == 0:
        env["status"] = None
    elif code == 1:
        env["status"] = {
            "executor": r.str("status executor"),
            "kind": r.str("status kind"),
            "message": r.str("status message"),
        }
    else:
        raise r.fail(f"status code is {code}, not 0 or 1")
    env["parts"] = list(r.u32s(r.u8("part count"), "parts"))
    route_count = r.u32("route count")
    # A route entry is at least 4 + 8 + 8 + 1 bytes: check before building the list.
    if route_count * 21 > r.left():
        raise r.fail(f"truncated: route count {route_count} needs at least {route_count * 21} bytes, {r.left()} left")
    env["routes"] = [
        {
            "pea": r.str(f"routes[{i}].pea"),
            "start": r.u64(f"routes[{i}].start"),
            "end": r.u64(f"routes[{i}].end"),
            "outcome": r.enum(f"routes[{i}].outcome", OUTCOMES),
        }
        for i in range(route_count)
    ]
    # Optional, last: present only on a traced request (docs/protocol.md).
    if r.left():
        tag = r.u8("trace tag")
        if tag != TRACE_TAG:
            raise r.fail(f"trace tag is {tag}, not {TRACE_TAG}")
        trace_id = r.take(16, "trace id")
        parent_id = r.take(8, "trace parent id")
        flags = r.u8("trace flags")
        if trace_id == bytes(16) or parent_id == bytes(8):
            raise r.fail("trace id or parent id is all zeros")
        # W3C trace flags: bit 0 is "sampled"; the others are kept as sent.
        env["trace"] = {"trace_id": trace_id.hex(), "parent_id": parent_id.hex(), "flags": flags}
    r.finish()
    return env


def _read_ends(r: _Reader, n: int, column: str) -> tuple[int, ...]:
    """Reads n end offsets; they never decrease. The column's byte count is
    the last one (0 when n = 0), so "the last equals the length of the
    column's bytes" holds by construction once those bytes are read."""
    ends = r.u32s(n, f"{column} ends")
    prev = 0
    for i, end in enumerate(ends):
        if end < prev:
            raise r.fail(f"{column} ends[{i}] = {end} is less than the offset before it ({prev})")
        prev = end
    return ends


def _spans(ends: tuple[int, ...]):
    start = 0
    for end in ends:
        yield start, end
        start = end


def _read_optional_column(r: _Reader, n: int, column: str) -> list:
    """An optional column: n presence flags, n end offsets, then the bytes.
    Returns one entry per document: None when absent, else bytes (blobs) or
    str (the UTF-8 columns; decoding each span on its own checks both that the
    data is UTF-8 and that every offset falls on a character boundary)."""
    flags = r.u8s(n, f"{column} presence flags")
    ends = _read_ends(r, n, column)
    data = r.take(ends[-1] if n else 0, f"{column} bytes")
    out = []
    for i, (flag, (start, end)) in enumerate(zip(flags, _spans(ends))):
        if flag == 0:
            if end != start:
                raise r.fail(f"{column}[{i}] is absent but occupies {end - start} bytes")
            out.append(None)
        elif flag == 1:
            span = data[start:end]
            out.append(r.utf8(span, f"{column}[{i}]") if column in TEXT_COLUMNS else span)
        else:
            raise r.fail(f"{column} presence flag [{i}] is {flag}, not 0 or 1")
    return out


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _parse_tags(r: _Reader, text: str, index: int) -> dict:
    """Tags are JSON object text. The spec has them parsed only by readers;
    a decoder that builds documents is one, so text that is not a JSON object
    is malformed here."""
    try:
        tags = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise r.fail(f"tags[{index}] is not JSON ({e})") from None
    if not isinstance(tags, dict):
        raise r.fail(f"tags[{index}] is JSON but not an object")
    return tags


def decode_body(frame: bytes) -> list[dict]:
    """Decodes a body frame into root documents (with their chunks and
    matches); raises ValueError if the body is not valid."""
    data = _as_bytes(frame)
    if not data:
        return []  # "An empty body frame (0 bytes) is a request with no documents."
    r = _Reader(data, "body")
    n = r.u32("n")
    # Every document takes at least 4 (id end) + 4 (parent) + 1 (relation)
    # + 5 * 5 (optional columns) + 4 (embedding dim) = 38 bytes.
    if n * 38 > r.left():
        raise r.fail(f"truncated: n = {n} documents need at least {n * 38} bytes, {r.left()} left")

    id_ends = _read_ends(r, n, "id")
    id_bytes = r.take(id_ends[-1] if n else 0, "id bytes")
    ids = [r.utf8(id_bytes[s:e], f"id[{i}]") for i, (s, e) in enumerate(_spans(id_ends))]

    parents = r.u32s(n, "parents")
    relations = r.u8s(n, "relations")
    for i, (parent, relation) in enumerate(zip(parents, relations)):
        if relation not in RELATIONS:
            raise r.fail(f"relations[{i}] is {relation}, not 0 (root), 1 (chunk) or 2 (match)")
        if (parent == NO_PARENT) != (relation == ROOT):
            raise r.fail(f"document {i}: relation {RELATIONS[relation]} disagrees with parent {parent:#x}")
        if parent != NO_PARENT and parent >= i:
            raise r.fail(f"document {i}: parent {parent} does not come before it")

    columns = {key: _read_optional_column(r, n, column) for column, key in OPTIONAL_COLUMNS}

    dims = r.u32s(n, "embedding dims")
    total = sum(dims)
    if total * 4 > r.left():
        raise r.fail(f"truncated: embedding dims add up to {total} values ({total * 4} bytes), {r.left()} left")
    values = r.f32s(total, "embeddings")

    score_count = r.u32("score count")
    # A score is at least 4 (doc) + 8 (value) + 4 (name) + 1 + 1 (flags) = 18 bytes.
    if score_count * 18 > r.left():
        raise r.fail(f"truncated: score count {score_count} needs at least {score_count * 18} bytes, {r.left()} left")
    scores = []
    for k in range(score_count):
        doc = r.u32(f"scores[{k}].doc")
        if doc >= n:
            raise r.fail(f"scores[{k}] names document {doc}, but there are {n}")
        value = r.f64(f"scores[{k}].value")
        name = r.str(f"scores[{k}].name")
        op_name = r.opt_str(f"scores[{k}].op_name")
        description = r.opt_str(f"scores[{k}].description")
        scores.append((doc, name, value, op_name, description))
    r.finish()

    # Build the trees without recursion (a chain of documents may be deep).
    docs: list[dict] = []
    offset = 0
    for i in range(n):
        doc = {"id": ids[i]}
        for _, key in OPTIONAL_COLUMNS:
            value = columns[key][i]
            if value is not None:
                doc[key] = _parse_tags(r, value, i) if key == "tags" else value
        if dims[i]:
            doc["embedding"] = values[offset:offset + dims[i]]
            offset += dims[i]
        docs.append(doc)
    for k, (doc, name, value, op_name, description) in enumerate(scores):
        target = docs[doc].setdefault("scores", {})
        # Two scores of one name on one document: the later one wins (spec, Body).
        score = {"value": value}
        if op_name is not None:
            score["op_name"] = op_name
        if description is not None:
            score["description"] = description
        target[name] = score
    roots = []
    for i, (parent, relation) in enumerate(zip(parents, relations)):
        if relation == ROOT:
            roots.append(docs[i])
        else:
            key = "chunks" if relation == CHUNK else "matches"
            docs[parent].setdefault(key, []).append(docs[i])
    return roots


# --------------------------------------------------------------------------
# Writing


class _Writer:
    """Collects (field name, bytes) pieces: joined they are the frame, and
    make_vectors.py prints them one per line as the annotated test vectors."""

    def __init__(self):
        self.pieces: list[tuple[str, bytes]] = []

    def put(self, field: str, raw: bytes) -> None:
        self.pieces.append((field, raw))

    def u8(self, field: str, value: int) -> None:
        self.put(field, struct.pack("<B", _check_int(value, U8_MAX, field)))

    def u32(self, field: str, value: int) -> None:
        self.put(field, struct.pack("<I", _check_int(value, U32_MAX, field)))

    def u64(self, field: str, value: int) -> None:
        self.put(field, struct.pack("<Q", _check_int(value, U64_MAX, field)))

    def u32s(self, field: str, values) -> None:
        values = [_check_int(v, U32_MAX, field) for v in values]
        self.put(field, struct.pack(f"<{len(values)}I", *values))

    def str(self, field: str, value: str) -> None:
        raw = _check_str(value, field).encode("utf-8")
        self.u32(f"{field} length {len(raw)}", len(raw))
        self.put(f"{field} {_show(value)}", raw)

    def opt_str(self, field: str, value: str | None) -> None:
        if value is None:
            self.u8(f"{field} absent", 0)
        else:
            self.u8(f"{field} present", 1)
            self.str(field, value)

    def frame(self) -> bytes:
        return b"".join(raw for _, raw in self.pieces)


def _show(text: str) -> str:
    """A string as it appears in a vector's comments: "quoted", or 'quoted'
    when it holds double quotes (JSON text), escaped if it is not plain."""
    if text.isprintable() and '"' not in text:
        return f'"{text}"'
    if text.isprintable() and "'" not in text:
        return f"'{text}'"
    return json.dumps(text)


def _check_int(value, limit: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field} must be an int, not {type(value).__name__}")
    if not 0 <= value <= limit:
        raise ValueError(f"{field} = {value} does not fit (0..{limit})")
    return value


def _check_str(value, field: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a str, not {type(value).__name__}")
    return value


def _check_enum(value, names: dict[int, str], field: str) -> int:
    _check_int(value, U8_MAX, field)
    if value not in names:
        raise ValueError(f"{field} = {value} is not one of {sorted(names)}")
    return value


def _write_envelope(w: _Writer, env: dict) -> None:
    w.put('magic "JW"', MAGIC)
    w.u8(f"version {VERSION}", VERSION)
    kind = _check_enum(env["kind"], KINDS, "kind")
    w.u8(f"kind {kind} ({KINDS[kind]})", kind)
    after = _check_enum(env["after_error"], AFTER_ERROR, "after_error")
    w.u8(f"after_error {after} ({AFTER_ERROR[after]})", after)
    w.str("request_id", env["request_id"])
    w.str("endpoint", env["endpoint"])
    w.str("parameters", env["parameters"])
    w.u64(f"deadline {env['deadline']}", env["deadline"])
    status = env.get("status")
    if status is None:
        w.u8("status code 0 (success)", 0)
    else:
        w.u8("status code 1 (error)", 1)
        w.str("status executor", status["executor"])
        w.str("status kind", status["kind"])
        w.str("status message", status["message"])
    parts = list(env.get("parts") or [])
    if len(parts) > U8_MAX:
        raise ValueError(f"{len(parts)} parts; the part count is a u8 (at most 255)")
    w.u8(f"part count {len(parts)}", len(parts))
    if parts:
        w.u32s(f"parts {parts}", parts)
    routes = list(env.get("routes") or [])
    w.u32(f"route count {len(routes)}", len(routes))
    for i, route in enumerate(routes):
        w.str(f"routes[{i}].pea", route["pea"])
        w.u64(f"routes[{i}].start {route['start']}", route["start"])
        w.u64(f"routes[{i}].end {route['end']}", route["end"])
        outcome = _check_enum(route["outcome"], OUTCOMES, f"routes[{i}].outcome")
        w.u8(f"routes[{i}].outcome {outcome} ({OUTCOMES[outcome]})", outcome)
    trace = env.get("trace")
    if trace is not None:
        trace_id, parent_id = bytes.fromhex(trace["trace_id"]), bytes.fromhex(trace["parent_id"])
        if len(trace_id) != 16 or len(parent_id) != 8 or trace_id == bytes(16) or parent_id == bytes(8):
            raise ValueError("a trace id is 16 bytes and a parent id 8, neither all zeros")
        w.u8(f"trace tag {TRACE_TAG}", TRACE_TAG)
        w.put(f"trace id {trace['trace_id']}", trace_id)
        w.put(f"trace parent id {trace['parent_id']}", parent_id)
        flags = trace["flags"]
        w.u8(f"trace flags {flags} ({'sampled' if flags & 1 else 'not sampled'})", flags)


def annotate_envelope(env: dict) -> list[tuple[str, bytes]]:
    """The envelope's fields as (name, bytes), in wire order."""
    w = _Writer()
    _write_envelope(w, env)
    if len(w.frame()) > MAX_ENVELOPE:
        raise ValueError("envelope over 1 MiB: receivers refuse it")
    return w.pieces


def encode_envelope(env: dict) -> bytes:
    """Encodes an envelope dict (see the module docstring) into a frame."""
    return b"".join(raw for _, raw in annotate_envelope(env))


def _flatten(roots) -> list[tuple[dict, int, int]]:
    """Depth-first pre-order: a document, then each of its chunks with their
    subtrees, then each of its matches with theirs. Returns (document, parent
    index, relation) per document. Iterative, so deep trees are fine."""
    flat = []
    stack = [(doc, NO_PARENT, ROOT) for doc in reversed(list(roots))]
    while stack:
        doc, parent, relation = stack.pop()
        if not isinstance(doc, dict):
            raise TypeError(f"a document is a dict, not {type(doc).__name__}")
        index = len(flat)
        flat.append((doc, parent, relation))
        children = [(c, index, CHUNK) for c in doc.get("chunks") or []]
        children += [(m, index, MATCH) for m in doc.get("matches") or []]
        stack.extend(reversed(children))
    return flat


def _column_value(doc: dict, key: str, index: int):
    """The bytes of one optional-column entry, or None when absent."""
    value = doc.get(key)
    if value is None:
        return None
    if key == "blob":
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"document {index}: blob must be bytes, not {type(value).__name__}")
        return bytes(value)
    if key == "tags":
        if not isinstance(value, dict):
            raise TypeError(f"document {index}: tags must be a dict, not {type(value).__name__}")
        if not value:
            # Empty tags are sent as absent. docs/protocol.md does not say
            # whether {} is "{}" or absent; the Rust side, whose documents
            # always have a (possibly empty) tags map, sends absent.
            return None
        return json.dumps(value, separators=(",", ":")).encode("utf-8")
    return _check_str(value, f"document {index}: {key}").encode("utf-8")


def _ends(values, column: str) -> list[int]:
    ends, total = [], 0
    for v in values:
        total += len(v) if v is not None else 0
        ends.append(total)
    if total > U32_MAX:
        raise ValueError(f"{column}: {total} bytes; offsets are u32")
    return ends


def _write_body(w: _Writer, roots) -> None:
    flat = _flatten(roots)
    n = len(flat)
    w.u32(f"n = {n} documents", n)
    if not n:
        w.put("every per-document column (id ends ... embeddings) has 0 entries", b"")

    ids = [_check_str(doc.get("id"), f"document {i}: id").encode("utf-8") for i, (doc, _, _) in enumerate(flat)]
    if n:
        w.u32s(f"id ends {_ends(ids, 'ids')}", _ends(ids, "ids"))
        w.put(f"id bytes {_show(b''.join(ids).decode())}", b"".join(ids))
        parents = [p for _, p, _ in flat]
        w.u32s("parents [" + ", ".join("root" if p == NO_PARENT else str(p) for p in parents) + "]", parents)
        relations = bytes(r for _, _, r in flat)
        w.put("relations [" + ", ".join(f"{r} {RELATIONS[r]}" for r in relations) + "]", relations)

    for column, key in OPTIONAL_COLUMNS:
        entries = [_column_value(doc, key, i) for i, (doc, _, _) in enumerate(flat)]
        if not n:
            continue
        flags = bytes(0 if e is None else 1 for e in entries)
        w.put(f"{column}: presence flags {list(flags)}", flags)
        ends = _ends(entries, column)
        w.u32s(f"{column}: ends {ends}", ends)
        data = b"".join(e for e in entries if e is not None)
        shown = data.hex(" ") if column == "blobs" else _show(data.decode())
        w.put(f"{column}: bytes {shown}" if data else f"{column}: bytes", data)

    embeddings = []
    for i, (doc, _, _) in enumerate(flat):
        vector = doc.get("embedding") or []
        embeddings.append([float(x) for x in vector])
    dims = [len(v) for v in embeddings]
    if n:
        w.u32s(f"embedding dims {dims}", dims)
    for i, vector in enumerate(embeddings):
        if vector:
            try:
                raw = struct.pack(f"<{len(vector)}f", *vector)
            except OverflowError:
                raise ValueError(f"document {i}: an embedding value does not fit in an f32") from None
            w.put(f"embeddings: document {i}, {len(vector)} x f32 {vector}", raw)

    # Scores in document pre-order; a document's own in sorted name order
    # (code point order, which is also UTF-8 byte order).
    scores = []
    for i, (doc, _, _) in enumerate(flat):
        for name in sorted(doc.get("scores") or {}):
            scores.append((i, name, doc["scores"][name]))
    w.u32(f"score count {len(scores)}", len(scores))
    for k, (i, name, score) in enumerate(scores):
        value = score["value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"document {i}: score {name!r} value must be a number")
        w.u32(f"scores[{k}].doc {i}", i)
        w.put(f"scores[{k}].value {float(value)} (f64)", struct.pack("<d", float(value)))
        w.str(f"scores[{k}].name", name)
        w.opt_str(f"scores[{k}].op_name", score.get("op_name"))
        w.opt_str(f"scores[{k}].description", score.get("description"))


def annotate_body(roots) -> list[tuple[str, bytes]]:
    """The body's fields as (name, bytes), in wire order."""
    w = _Writer()
    _write_body(w, roots)
    return w.pieces


def encode_body(roots) -> bytes:
    """Encodes root documents (with their chunks and matches) into a body
    frame. No documents encode as a body with n = 0 (8 bytes); decode_body
    also accepts the empty frame for no documents."""
    return b"".join(raw for _, raw in annotate_body(roots))
