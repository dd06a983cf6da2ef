"""`py-sentence-segmenter`: examples/executors/sentence-segmenter in Python,
output for output (the tests feed both the same documents and compare).

- ``with:``: ``min_len`` (default 1): sentences shorter than this many
  characters (after trimming) are dropped.
- Endpoints: every endpoint. For each top-level document with text, appends
  one chunk per sentence: id ``<parent id>-<i>``, the trimmed sentence as
  ``text``, ``mime_type`` ``text/plain``, tags ``{"offset": i, "start": s,
  "end": e}`` with ``s..e`` the sentence's *byte* range in the parent's UTF-8
  text (as in Rust).

A sentence ends after ``.``, ``!`` or ``?`` when followed by whitespace or
the end of the text, and at every newline. Whitespace is Rust's
``char::is_whitespace`` (Unicode White_Space), not Python's ``str.isspace``,
which also counts U+001C..U+001F: the two would trim differently.
"""

from jina_executor import Document, Executor, ExecutorError, requests, whole_number

# Unicode White_Space, the set Rust's `char::is_whitespace` and `str::trim` use.
WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def split_sentences(text):
    """The (start, end) code-point ranges of the trimmed, non-empty sentences."""
    out = []

    def push(start, end):
        while start < end and text[start] in WHITESPACE:
            start += 1
        while end > start and text[end - 1] in WHITESPACE:
            end -= 1
        if start < end:
            out.append((start, end))

    start = 0
    last = len(text) - 1
    for i, c in enumerate(text):
        if c == "\n":
            push(start, i)
            start = i + 1
        elif c in ".!?" and (i == last or text[i + 1] in WHITESPACE):
            push(start, i + 1)
            start = i + 1
    push(start, len(text))
    return out


class SentenceSegmenter(Executor):
    def __init__(self, min_len=1, **kwargs):
        super().__init__(**kwargs)
        # A whole double (`3.0`) is the integer it stands for, as in Rust.
        min_len = whole_number(min_len, "with.min_len")
        if min_len < 0:
            raise ExecutorError.bad_config(f"with.min_len = {min_len!r}: expected a non-negative integer")
        self.min_len = min_len

    @requests
    def segment(self, docs, parameters, **kwargs):
        """Append one chunk per sentence to each document with text.

        The first line above is what the executor declares to the host.
        """
        for doc in docs:
            text = doc.text
            if text is None:
                continue
            ascii = text.isascii()
            # Byte offsets, counted forward once: sentences come in order.
            at_char, at_byte = 0, 0

            def byte_offset(i):
                nonlocal at_char, at_byte
                if not ascii:
                    at_byte += len(text[at_char:i].encode("utf-8"))
                    at_char = i
                    return at_byte
                return i

            kept = 0
            for start, end in split_sentences(text):
                if end - start < self.min_len:
                    continue
                s, e = byte_offset(start), byte_offset(end)
                doc.chunks.append(Document(
                    id=f"{doc.id}-{kept}",
                    text=text[start:end],
                    mime_type="text/plain",
                    tags={"offset": kept, "start": s, "end": e},
                ))
                kept += 1
