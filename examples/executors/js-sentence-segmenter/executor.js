// `js-sentence-segmenter`: examples/executors/sentence-segmenter in
// JavaScript, output for output (the tests feed both the same documents and
// compare).
//
// - `with:`: `min_len` (default 1): sentences shorter than this many
//   characters (code points, after trimming) are dropped.
// - Endpoints: every endpoint. For each top-level document with text, appends
//   one chunk per sentence: id `<parent id>-<i>`, the trimmed sentence as
//   `text`, `mimeType` `text/plain`, tags `{"offset": i, "start": s, "end": e}`
//   with `s..e` the sentence's *byte* range in the parent's UTF-8 text (as in
//   Rust; JavaScript strings count UTF-16 units, so offsets are converted).
//
// A sentence ends after `.`, `!` or `?` when followed by whitespace or the end
// of the text, and at every newline. Whitespace is Rust's `char::is_whitespace`
// (Unicode White_Space), not JavaScript's `trim`, which also strips U+FEFF.

import { Document, Executor, ExecutorError, requests, serve } from '../../../guest-sdk/js/jina-executor.js';

const WHITESPACE = new Set(Array.from(
  '\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006' +
  '\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000'));

/** The [start, end) code-point ranges of the trimmed, non-empty sentences of `chars`. */
export function splitSentences(chars) {
  const out = [];
  const push = (start, end) => {
    while (start < end && WHITESPACE.has(chars[start])) start++;
    while (end > start && WHITESPACE.has(chars[end - 1])) end--;
    if (start < end) out.push([start, end]);
  };
  let start = 0;
  const n = chars.length;
  for (let i = 0; i < n; i++) {
    const c = chars[i];
    if (c === '\n') {
      push(start, i);
      start = i + 1;
    } else if ((c === '.' || c === '!' || c === '?') && (i + 1 === n || WHITESPACE.has(chars[i + 1]))) {
      push(start, i + 1);
      start = i + 1;
    }
  }
  push(start, n);
  return out;
}

class SentenceSegmenter extends Executor {
  constructor({ min_len = 1, ...rest } = {}) {
    super();
    const unknown = Object.keys(rest);
    if (unknown.length) throw ExecutorError.badConfig(`SentenceSegmenter does not take the parameter(s) ${unknown.sort().join(', ')}`);
    if (!Number.isInteger(min_len) || min_len < 0) throw ExecutorError.badConfig(`with.min_len = ${JSON.stringify(min_len)}: expected a non-negative integer`);
    this.minLen = min_len;
  }

  segment(docs) {
    for (const doc of docs) {
      if (doc.text === undefined) continue;
      const chars = Array.from(doc.text); // code points
      // bytes[i]: UTF-8 offset of code point i.
      const bytes = new Array(chars.length + 1);
      bytes[0] = 0;
      for (let i = 0; i < chars.length; i++) {
        const cp = chars[i].codePointAt(0);
        bytes[i + 1] = bytes[i] + (cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4);
      }
      let kept = 0;
      for (const [start, end] of splitSentences(chars)) {
        if (end - start < this.minLen) continue;
        doc.chunks.push(new Document({
          id: `${doc.id}-${kept}`,
          text: chars.slice(start, end).join(''),
          mimeType: 'text/plain',
          tags: { offset: kept, start: bytes[start], end: bytes[end] },
        }));
        kept++;
      }
    }
  }
}
requests(SentenceSegmenter.prototype.segment, { doc: 'Append one chunk per sentence to each document with text' });

export const executor = serve(SentenceSegmenter);
