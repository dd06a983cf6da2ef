"""Write jina-wasm executors in Python, in Jina's style.

An executor is a subclass of :class:`Executor` in a module named ``executor``
(Jina Hub's layout). Its constructor takes the ``with:`` parameters as keyword
arguments; methods marked with :func:`requests` handle endpoints::

    from jina_executor import Executor, Document, requests

    class Upper(Executor):
        def __init__(self, suffix='', **kwargs):
            self.suffix = suffix

        @requests(on='/upper')
        def upper(self, docs, parameters, **kwargs):
            for doc in docs:
                if doc.text is not None:
                    doc.text = doc.text.upper() + self.suffix

``componentize-py`` compiles it, this SDK and a CPython interpreter into one
component for the ``jina:executor/executor-world@0.1.0`` world
(docs/python-executors.md). Everything generated from WIT stays in the
``jina_executor.component`` module and the codec in ``jina_executor.wire``;
none of it appears in this API.
"""

import traceback as _traceback

__all__ = ["Document", "NamedScore", "Executor", "ExecutorError", "requests"]


class NamedScore:
    """One named score of a document (Jina's ``NamedScore``)."""

    __slots__ = ("value", "op_name", "description")

    def __init__(self, value=0.0, op_name=None, description=None):
        self.value = float(value)
        self.op_name = op_name
        self.description = description

    def __eq__(self, other):
        return isinstance(other, NamedScore) and (self.value, self.op_name, self.description) == (
            other.value, other.op_name, other.description)

    def __repr__(self):
        return f"NamedScore({self.value!r}, op_name={self.op_name!r}, description={self.description!r})"


class Document:
    """Jina's document: the fields the contract carries, with nested ``chunks``
    (parts of this document) and ``matches`` (results found for it).

    ``embedding`` is a list of floats (32-bit across the boundary) or None;
    ``tags`` a dict that serialises to JSON; ``scores`` maps a name to a
    :class:`NamedScore`.
    """

    __slots__ = ("id", "text", "blob", "uri", "mime_type", "embedding", "tags", "scores", "chunks", "matches")

    def __init__(self, id="", text=None, blob=None, uri=None, mime_type=None, embedding=None,
                 tags=None, scores=None, chunks=None, matches=None):
        self.id = id
        self.text = text
        self.blob = blob
        self.uri = uri
        self.mime_type = mime_type
        self.embedding = embedding
        self.tags = {} if tags is None else tags
        self.scores = {} if scores is None else scores
        self.chunks = [] if chunks is None else chunks
        self.matches = [] if matches is None else matches

    def __eq__(self, other):
        return isinstance(other, Document) and all(
            getattr(self, f) == getattr(other, f) for f in Document.__slots__)

    def __repr__(self):
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in Document.__slots__ if getattr(self, f))
        return f"Document({fields})"


class ExecutorError(Exception):
    """A failure the host receives with its kind: ``bad-request``,
    ``bad-config``, ``read-only``, ``io`` or ``internal``.

    Any other exception a handler raises reaches the host as ``internal``
    with its type, message and the last line of its traceback.
    """

    KINDS = ("bad-request", "bad-config", "read-only", "io", "internal")

    def __init__(self, kind, message):
        if kind not in ExecutorError.KINDS:
            raise ValueError(f"unknown error kind {kind!r}: expected one of {', '.join(ExecutorError.KINDS)}")
        super().__init__(message)
        self.kind = kind
        self.message = message

    @classmethod
    def bad_request(cls, message):
        return cls("bad-request", message)

    @classmethod
    def bad_config(cls, message):
        return cls("bad-config", message)


def requests(func=None, *, on=None):
    """Marks a method as the handler of ``on`` (an endpoint such as
    ``'/index'``, or a list of them), or of every endpoint no other handler
    names when ``on`` is omitted (Jina's default handler).

    A handler is called as ``handler(docs, parameters)`` (with more keyword
    arguments possibly added later: accept ``**kwargs``) and returns the
    documents to pass on, or None when it changed ``docs`` in place.
    """
    def mark(f):
        endpoints = f.__dict__.setdefault("_jina_requests_on", [])
        if on is None:
            endpoints.append(None)
        elif isinstance(on, str):
            endpoints.append(on)
        else:
            endpoints.extend(on)
        return f

    if func is not None:
        return mark(func)
    return mark


class Executor:
    """Base class of every Python executor.

    The host builds one instance per component instance from the ``with:``
    parameters (``Executor(**config)``; an unknown parameter is a
    ``bad-config`` error naming it), then calls the handlers that
    :func:`requests` marked. Override :meth:`dump` to persist state into
    ``/workspace`` and :meth:`close` to release anything at shutdown.
    Endpoints without a handler pass the documents on unchanged.
    """

    def __init__(self, **kwargs):
        if kwargs:
            raise ExecutorError.bad_config(
                f"{type(self).__name__} does not take the parameter(s) {', '.join(sorted(kwargs))}")

    def dump(self):
        """Persists state into the workspace; nothing to do by default."""

    def close(self):
        """Called once before the instance is dropped."""

    @classmethod
    def _routes(cls):
        """``{endpoint or None: method name}`` over the class and its bases,
        the subclass winning."""
        routes = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                for endpoint in getattr(value, "_jina_requests_on", ()):
                    routes[endpoint] = name
        return routes


def describe(error):
    """The ``(kind, message)`` the host receives for an exception."""
    if isinstance(error, ExecutorError):
        return error.kind, error.message
    where = _traceback.extract_tb(error.__traceback__)
    at = f" (at {where[-1].filename}:{where[-1].lineno})" if where else ""
    return "internal", f"{type(error).__name__}: {error}{at}"
