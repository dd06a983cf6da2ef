"""The seam between the generated WIT types and ours: the columnar ``batch``
<-> a list of :class:`Document` trees (the format is specified in
guest-sdk/src/wire.rs and docs/wit-contract.md; this is the same reader and
writer in Python).

Packed string columns hold UTF-8 byte offsets, so strings are sliced as
bytes. The reader checks every column's length and every parent link and
names the column and the document on failure (``batch texts[3]: ...``).
"""

import json

from wit_world.imports import types as wit

from . import Document, ExecutorError, NamedScore


def _bad(column, index, what):
    return ExecutorError.bad_request(f"batch {column}[{index}]: {what}")


def _check_len(column, length, n):
    if length != n:
        what = "missing" if length < n else "extra entry"
        raise _bad(column, min(length, n), f"{what}: the column has {length} entries for {n} documents")


def _strings(column, data, ends, n, present=None):
    """Entries of a packed (optional) column, as str; None where absent."""
    _check_len(column + ".ends", len(ends), n)
    if present is not None:
        _check_len(column + ".present", len(present), n)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if n and ends[-1] != len(raw):
        raise _bad(column, n - 1, f"the last end is {ends[-1]} but the data has {len(raw)} bytes")
    out = []
    start = 0
    for i, end in enumerate(ends):
        if end < start:
            raise _bad(column, i, f"ends decrease ({end} after {start})")
        piece = raw[start:end]
        if present is not None and not present[i]:
            if piece:
                raise _bad(column, i, "absent entry has a non-empty span")
            out.append(None)
        elif isinstance(data, str):
            try:
                out.append(piece.decode("utf-8"))
            except UnicodeDecodeError:
                raise _bad(column, i, "span does not fall on a UTF-8 boundary") from None
        else:
            out.append(bytes(piece))
        start = end
    return out


def from_batch(batch):
    """The document trees of a batch."""
    n = len(batch.ids.ends)
    ids = _strings("ids", batch.ids.data, batch.ids.ends, n)
    texts = _strings("texts", batch.texts.data, batch.texts.ends, n, batch.texts.present)
    blobs = _strings("blobs", batch.blobs.data, batch.blobs.ends, n, batch.blobs.present)
    uris = _strings("uris", batch.uris.data, batch.uris.ends, n, batch.uris.present)
    mimes = _strings("mime-types", batch.mime_types.data, batch.mime_types.ends, n, batch.mime_types.present)
    tags = _strings("tags", batch.tags.data, batch.tags.ends, n, batch.tags.present)
    _check_len("parents", len(batch.parents), n)
    _check_len("relations", len(batch.relations), n)
    _check_len("embedding-dims", len(batch.embedding_dims), n)
    nodes = []
    roots = []
    offset = 0
    embeddings = batch.embeddings
    for i in range(n):
        tag = {}
        if tags[i] is not None:
            try:
                tag = json.loads(tags[i])
            except ValueError as e:
                raise _bad("tags", i, f"tags are not valid JSON: {e}") from None
            if not isinstance(tag, dict):
                raise _bad("tags", i, "tags must be a JSON object")
        dim = batch.embedding_dims[i]
        embedding = None
        if dim:
            if offset + dim > len(embeddings):
                raise _bad("embedding-dims", i,
                           f"dim {dim} at offset {offset} runs past the {len(embeddings)} embedding values")
            embedding = list(embeddings[offset:offset + dim])
            offset += dim
        doc = Document(ids[i], texts[i], blobs[i], uris[i], mimes[i], embedding, tag)
        nodes.append(doc)
        parent, relation = batch.parents[i], batch.relations[i]
        if parent is None:
            if relation != wit.Relation.ROOT:
                raise _bad("relations", i, f"relation {relation.name.lower()} needs a parent")
            roots.append(doc)
        elif relation == wit.Relation.ROOT:
            raise _bad("relations", i, "relation root must not have a parent")
        elif parent >= i:
            raise _bad("parents", i, f"parent index {parent} does not come before the document")
        elif relation == wit.Relation.CHUNK:
            nodes[parent].chunks.append(doc)
        else:
            nodes[parent].matches.append(doc)
    if offset != len(embeddings):
        raise ExecutorError.bad_request(
            f"batch embedding-dims sum to {offset} but embeddings has {len(embeddings)} values")
    for k, s in enumerate(batch.scores):
        if s.doc >= n:
            raise _bad("scores", k, f"doc {s.doc} is out of range for {n} documents")
        nodes[s.doc].scores[s.name] = NamedScore(s.value, s.op_name, s.description)
    return roots


class _Column:
    """A packed column being written: its pieces, their byte ends, presence."""

    def __init__(self, binary=False):
        self.binary = binary
        self.pieces = []
        self.ends = []
        self.present = []
        self.length = 0

    def push(self, value):
        if value is None:
            self.present.append(False)
        else:
            self.present.append(True)
            if self.binary:
                value = bytes(value)
                self.length += len(value)
            else:
                # The UTF-8 length without encoding twice: ASCII is the common case.
                self.length += len(value) if value.isascii() else len(value.encode("utf-8"))
            self.pieces.append(value)
        self.ends.append(self.length)

    def data(self):
        return b"".join(self.pieces) if self.binary else "".join(self.pieces)


def _optional(column):
    return wit.OptionalStringColumn(column.present, column.data(), column.ends)


def to_batch(roots):
    """The batch of a list of document trees, in depth-first pre-order."""
    ids, texts, blobs, uris, mimes, tags = (_Column(), _Column(), _Column(True), _Column(), _Column(), _Column())
    parents, relations, dims, embeddings, scores = [], [], [], [], []
    # (document, parent index, relation), children pushed in reverse so they pop in order.
    stack = [(doc, None, wit.Relation.ROOT) for doc in reversed(roots)]
    while stack:
        doc, parent, relation = stack.pop()
        if not isinstance(doc, Document):
            raise ExecutorError("internal", f"a handler returned {type(doc).__name__}, not a Document")
        index = len(parents)
        parents.append(parent)
        relations.append(relation)
        ids.push(doc.id)
        texts.push(doc.text)
        blobs.push(doc.blob)
        uris.push(doc.uri)
        mimes.push(doc.mime_type)
        tags.push(json.dumps(doc.tags, separators=(",", ":"), ensure_ascii=False) if doc.tags else None)
        embedding = doc.embedding if doc.embedding is not None else ()
        dims.append(len(embedding))
        embeddings.extend(float(x) for x in embedding)
        for name in sorted(doc.scores):
            s = doc.scores[name]
            scores.append(wit.NamedScore(index, name, float(s.value), s.op_name, s.description))
        stack.extend((m, index, wit.Relation.MATCH) for m in reversed(doc.matches))
        stack.extend((c, index, wit.Relation.CHUNK) for c in reversed(doc.chunks))
    return wit.Batch(
        wit.StringColumn(ids.data(), ids.ends),
        parents,
        relations,
        _optional(texts),
        wit.OptionalBytesColumn(blobs.present, blobs.data(), blobs.ends),
        _optional(uris),
        _optional(mimes),
        _optional(tags),
        dims,
        embeddings,
        scores,
    )
