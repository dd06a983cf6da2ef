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

The endpoints the :func:`requests` decorators name are declared to the host
(``jina-wasm inspect``, the gateway's ``/openapi.json``), each with the first
line of its method's docstring.

The host's facts about the instance (shard, replica, read-only, durable,
memory limit) are ``self.runtime_args`` (:class:`RuntimeArgs`), as in Jina;
they never appear among the ``with:`` parameters.

``componentize-py`` compiles it, this SDK and a CPython interpreter into one
component for the ``jina:executor/executor-world@0.2.0`` world
(docs/python-executors.md). Everything generated from WIT stays in the
``jina_executor.component`` module and the codec in ``jina_executor.wire``;
none of it appears in this API.
"""

import inspect as _inspect
import traceback as _traceback

__all__ = ["Document", "NamedScore", "Executor", "ExecutorError", "Parameters", "RuntimeArgs",
           "requests", "whole_number"]


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
    ``bad-config``, ``read-only``, ``io``, ``internal`` or ``capacity`` (the
    executor is full: the request would pass a limit it was given, such as
    ``self.runtime_args.memory_limit``; apply none of it).

    Any other exception a handler raises reaches the host as ``internal``
    with its type, message and the last line of its traceback.
    """

    KINDS = ("bad-request", "bad-config", "read-only", "io", "internal", "capacity")

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

    @classmethod
    def capacity(cls, message):
        """The executor is full; name the limit in ``message``."""
        return cls("capacity", message)


def whole_number(value, name, kind="bad-config"):
    """``value`` as an ``int`` when it is a whole number, also written as a
    double (``3.0``: Jina's Python client sends every number so); ``None``
    stays ``None``. Anything else (``3.5``, ``"3"``, ``True``) raises an
    :class:`ExecutorError` of ``kind`` naming ``name`` (``with.min_len``).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        return value
    elif isinstance(value, float) and value.is_integer():
        return int(value)
    raise ExecutorError(kind, f"{name} = {value!r}: expected a whole number")


class Parameters(dict):
    """A request's parameters: a ``dict`` (the JSON object the client sent)
    with typed getters whose errors are ``bad-request`` naming the key."""

    def get_int(self, key, default=None):
        """``self[key]`` as an ``int`` (a whole double such as ``3.0`` is
        accepted), or ``default`` when absent or null; ``3.5`` is refused."""
        value = self.get(key)
        if value is None:
            return default
        return whole_number(value, f"parameters.{key}", "bad-request")


class RuntimeArgs:
    """What the host says about this instance (Jina's ``runtime_args``).

    - ``shard_id``, ``shards``: this shard (0-based) and the Pod's count, or None
    - ``replica_id``, ``replicas``: this replica (a string) and the count, or None
    - ``read_only``: the workspace is read-only and ``dump`` is never called
    - ``durable``: ``dump`` runs after every request before it is answered
    - ``memory_limit``: the instance's memory limit in bytes, or None

    They inform the executor; the host enforces what matters itself (a
    read-only workspace is mounted read-only, each shard has its own
    workspace, the memory limit traps), so a wrong value harms only the
    executor that trusts it.
    """

    __slots__ = ("shard_id", "shards", "replica_id", "replicas", "read_only", "durable", "memory_limit")

    def __init__(self, facts=None):
        facts = facts if isinstance(facts, dict) else {}

        def count(key):
            value = facts.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None
            return int(value) if float(value).is_integer() and value >= 0 else None

        replica = facts.get("replica_id")
        self.shard_id = count("shard_id")
        self.shards = count("shards")
        self.replica_id = None if replica is None or isinstance(replica, (bool, dict, list)) else str(replica)
        self.replicas = count("replicas")
        self.read_only = facts.get("read_only") is True
        self.durable = facts.get("durable") is True
        self.memory_limit = count("memory_limit")

    def __eq__(self, other):
        return isinstance(other, RuntimeArgs) and all(
            getattr(self, f) == getattr(other, f) for f in RuntimeArgs.__slots__)

    def __repr__(self):
        return "RuntimeArgs(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in RuntimeArgs.__slots__) + ")"


# The facts of the instance being built: set by the component's `init` around
# the constructor call, read by `Executor.__new__`.
_building_runtime_args = None


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

    ``self.runtime_args`` (:class:`RuntimeArgs`) is set before the
    subclass's ``__init__`` runs, so the constructor can read it.
    """

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        self.runtime_args = _building_runtime_args or RuntimeArgs()
        return self

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

    @classmethod
    def _declared(cls):
        """``[(endpoint, doc)]`` for the host (contract 0.2.0's
        ``endpoints``): each endpoint a handler names, ``__default__`` for a
        handler without ``on``; the doc is the first line of the handler's
        docstring (at most 1024 bytes)."""
        declared = []
        for endpoint, name in cls._routes().items():
            doc = (_inspect.getdoc(getattr(cls, name)) or "").strip()
            line = doc.splitlines()[0] if doc else ""
            line = "".join(c for c in line if c.isprintable())
            line = line.encode()[:1024].decode(errors="ignore")
            declared.append(("__default__" if endpoint is None else endpoint, line))
        return declared


def describe(error):
    """The ``(kind, message)`` the host receives for an exception."""
    if isinstance(error, ExecutorError):
        return error.kind, error.message
    where = _traceback.extract_tb(error.__traceback__)
    at = f" (at {where[-1].filename}:{where[-1].lineno})" if where else ""
    return "internal", f"{type(error).__name__}: {error}{at}"
