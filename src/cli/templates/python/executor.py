"""`{{name}}`: a jina-wasm executor. Endpoint `/upper`: upper-cases each
document's text and appends `with: {suffix: ...}` (default empty)."""

from jina_executor import Executor, requests


class {{class}}(Executor):
    def __init__(self, suffix="", **kwargs):
        super().__init__(**kwargs)
        self.suffix = suffix

    @requests(on="/upper")
    def upper(self, docs, parameters, **kwargs):
        """Upper-case each document's text and append the suffix."""
        for doc in docs:
            if doc.text is not None:
                doc.text = doc.text.upper() + self.suffix
