"""The component's entry: componentize-py's app module. It implements the
exported ``executor`` interface (the generated ``Executor`` protocol) by
building the user's executor from the module ``executor`` and dispatching to
its handlers.

componentize-py may construct this ``Executor`` class more than once (the
build pre-initialises the interpreter), so the user's instance lives in a
module global, not on ``self``.
"""

import inspect
import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types as wit

import jina_executor
from jina_executor import wire

# The user's module, imported at build time: an import error fails the build.
import executor as _user_module

_KINDS = {
    "bad-request": wit.ErrorKind.BAD_REQUEST,
    "bad-config": wit.ErrorKind.BAD_CONFIG,
    "read-only": wit.ErrorKind.READ_ONLY,
    "io": wit.ErrorKind.IO,
    "internal": wit.ErrorKind.INTERNAL,
    "capacity": wit.ErrorKind.CAPACITY,
}


def _find_executor_class():
    found = [c for c in vars(_user_module).values()
             if inspect.isclass(c) and issubclass(c, jina_executor.Executor)
             and c is not jina_executor.Executor and c.__module__ == _user_module.__name__]
    if len(found) != 1:
        names = ", ".join(c.__name__ for c in found) or "none"
        raise TypeError(f"executor.py must define exactly one subclass of jina_executor.Executor (found: {names})")
    return found[0]


_CLASS = _find_executor_class()
_ROUTES = _CLASS._routes()
_instance = None


def _fail(error):
    kind, message = jina_executor.describe(error)
    return Err(wit.Error(_KINDS[kind], message))


def _json_object(text, what, kind):
    try:
        value = json.loads(text) if text else {}
    except ValueError as e:
        raise jina_executor.ExecutorError(kind, f"{what} is not valid JSON: {e}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise jina_executor.ExecutorError(kind, f"{what} must be a JSON object")
    return value


class Executor(exports.Executor):
    def endpoints(self):
        # May come before `init` (docs/wit-contract.md): from the class alone.
        return [wit.EndpointInfo(name, doc) for name, doc in _CLASS._declared()]

    def init(self, config):
        global _instance
        try:
            config = _json_object(config, "with", "bad-config")
            # The host's facts travel under `jina` (docs/wit-contract.md):
            # runtime_args, never a constructor argument.
            runtime_args = jina_executor.RuntimeArgs(config.pop("jina", None))
            try:
                inspect.signature(_CLASS).bind(**config)
            except TypeError as e:
                # Jina's style: `with:` keys are constructor arguments, so a
                # wrong one is a configuration error, named.
                raise jina_executor.ExecutorError.bad_config(f"{_CLASS.__name__}: {e}") from None
            jina_executor._building_runtime_args = runtime_args
            try:
                _instance = _CLASS(**config)
            finally:
                jina_executor._building_runtime_args = None
        except Exception as e:
            raise _fail(e)

    def handle(self, endpoint, docs, parameters):
        name = _ROUTES.get(endpoint, _ROUTES.get(None))
        if name is None:
            return docs  # no handler: the documents pass on unchanged, untouched
        try:
            documents = wire.from_batch(docs)
            params = jina_executor.Parameters(_json_object(parameters, "parameters", "bad-request"))
            result = getattr(_instance, name)(documents, params)
            return wire.to_batch(documents if result is None else result)
        except Exception as e:
            raise _fail(e)

    def dump(self):
        try:
            _instance.dump()
        except Exception as e:
            raise _fail(e)

    def close(self):
        try:
            _instance.close()
        except Exception:
            pass
