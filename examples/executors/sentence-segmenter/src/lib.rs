//! `sentence-segmenter`: splits each document's text into sentence chunks.
//!
//! - `with:`
//!   - `min_len` (default 1): sentences shorter than this many characters (after
//!     trimming) are dropped.
//! - Endpoints: every endpoint (the default route). For each top-level document
//!   with text, appends one chunk per sentence:
//!   - id `<parent id>-<i>`, `i` counting the kept sentences from 0;
//!   - `text` the trimmed sentence, `mime_type` `text/plain`;
//!   - tags `{"offset": i, "start": s, "end": e}`, the sentence's byte range in the
//!     parent's text.
//!
//! A sentence ends after `.`, `!` or `?` when followed by whitespace or the end of
//! the text (so `3.14` and `...` stay inside), and at every newline.

use jina_guest_sdk::prelude::*;

struct SentenceSegmenter {
    min_len: usize,
}

impl Executor for SentenceSegmenter {
    fn init(config: Config) -> Result<Self> {
        Ok(SentenceSegmenter {
            min_len: config.get_or("min_len", 1)?,
        })
    }

    fn routes() -> Routes<Self> {
        Routes::new()
            .default(Self::segment)
            .doc("Append one chunk per sentence to each document with text")
    }
}

impl SentenceSegmenter {
    fn segment(&mut self, mut docs: Vec<Document>, _params: &Params) -> Result<Vec<Document>> {
        for doc in &mut docs {
            let Some(text) = doc.text.as_deref() else {
                continue;
            };
            let sentences = split_sentences(text)
                .into_iter()
                .filter(|&(start, end)| text[start..end].chars().count() >= self.min_len);
            let mut chunks = Vec::new();
            for (i, (start, end)) in sentences.enumerate() {
                chunks.push(
                    Document::new(format!("{}-{i}", doc.id))
                        .with_text(&text[start..end])
                        .with_mime_type("text/plain")
                        .with_tag("offset", i)
                        .with_tag("start", start)
                        .with_tag("end", end),
                );
            }
            doc.chunks.extend(chunks);
        }
        Ok(docs)
    }
}

/// The byte ranges of the trimmed, non-empty sentences of `text`.
fn split_sentences(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut push = |start: usize, end: usize| {
        let piece = &text[start..end];
        let trimmed = piece.trim_start();
        let s = start + (piece.len() - trimmed.len());
        let e = s + trimmed.trim_end().len();
        if s < e {
            out.push((s, e));
        }
    };
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next = chars.peek().map(|&(_, n)| n);
        if c == '\n' {
            push(start, i);
            start = i + 1;
        } else if matches!(c, '.' | '!' | '?') && next.is_none_or(char::is_whitespace) {
            let end = i + c.len_utf8();
            push(start, end);
            start = end;
        }
    }
    push(start, text.len());
    out
}

export_executor!(SentenceSegmenter);

#[cfg(test)]
mod tests {
    use super::split_sentences;

    fn split(text: &str) -> Vec<&str> {
        split_sentences(text)
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect()
    }

    #[test]
    fn splits_on_terminators_and_newlines() {
        assert_eq!(
            split("Hi there. Pi is 3.14! Really?Yes\nnext line  "),
            vec!["Hi there.", "Pi is 3.14!", "Really?Yes", "next line"]
        );
        assert_eq!(split("Wait... what?!"), vec!["Wait...", "what?!"]);
        assert!(split("  \n \n").is_empty());
    }
}
