//! Columns checked before anything trusts them: what the host does to a
//! decoded body and to an executor's output, and what a guest does to the
//! batch it is given. The checks never panic and never recurse.

use std::fmt;

use serde_json::{Map, Value};

use crate::{Columns, MAX_DEPTH, Relation, too_deep};

/// Why columns were refused, and where: the column and the document (by
/// index) at fault, when there is one.
///
/// Displayed as `texts[3]: absent but has data` (a column and a document),
/// `column ids: 4 entries for 5 documents` (a column), `document 33: ...`
/// (a document), or the reason alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The column at fault (`texts`, `parents`), as the wire names it.
    pub column: Option<&'static str>,
    /// The entry at fault, by index: a document's (in `scores`, a score's).
    pub doc: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

impl Error {
    /// Entry `doc` of `column` is wrong.
    pub fn entry(column: &'static str, doc: usize, reason: impl Into<String>) -> Error {
        Error {
            column: Some(column),
            doc: Some(doc),
            reason: reason.into(),
        }
    }

    /// `column` as a whole is wrong.
    pub fn column(column: &'static str, reason: impl Into<String>) -> Error {
        Error {
            column: Some(column),
            doc: None,
            reason: reason.into(),
        }
    }

    /// Document `doc` is wrong, whatever column says so.
    pub fn document(doc: usize, reason: impl Into<String>) -> Error {
        Error {
            column: None,
            doc: Some(doc),
            reason: reason.into(),
        }
    }

    /// The columns disagree with each other.
    pub fn columns(reason: impl Into<String>) -> Error {
        Error {
            column: None,
            doc: None,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.column, self.doc) {
            (Some(column), Some(doc)) => write!(f, "{column}[{doc}]: {}", self.reason),
            (Some(column), None) => write!(f, "column {column}: {}", self.reason),
            (None, Some(doc)) => write!(f, "document {doc}: {}", self.reason),
            (None, None) => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for Error {}

/// For callers whose errors are messages (`?` in a `Result<_, String>`).
impl From<Error> for String {
    fn from(error: Error) -> String {
        error.to_string()
    }
}

impl Columns {
    /// Checks every column against the document count and the tree rule (each
    /// parent comes before its children; `root` exactly when there is no parent;
    /// no document more than [`MAX_DEPTH`] levels below its root), the
    /// embedding values against their lengths and every score's document.
    /// Tags are not parsed here (that costs a JSON parse per document on every
    /// hop); [`Columns::check_tags`] and [`Columns::into_documents`] do.
    ///
    /// # Errors
    /// The first fault found, naming the column and the document index.
    pub fn validate(&self) -> Result<(), Error> {
        let n = self.len();
        if u32::try_from(n).is_err() {
            return Err(Error::column(
                "ids",
                format!("{n} entries, more than u32::MAX documents"),
            ));
        }
        if !self.ids.present.is_empty() {
            return Err(Error::column("ids", "ids are never absent"));
        }
        self.ids.check_str("ids", n, false)?;
        self.texts.check_str("texts", n, true)?;
        self.blobs.check("blobs", n, true)?;
        self.uris.check_str("uris", n, true)?;
        self.mime_types.check_str("mime_types", n, true)?;
        self.tags.check_str("tags", n, true)?;
        for (column, len) in [
            ("parents", self.parents.len()),
            ("relations", self.relations.len()),
            ("embedding_dims", self.embedding_dims.len()),
        ] {
            if len != n {
                return Err(Error::column(
                    column,
                    format!("{len} entries for {n} documents"),
                ));
            }
        }
        // Each document's level below its root; a parent comes first, so one
        // pass finds them all (MAX_DEPTH fits a byte).
        let mut levels = vec![0u8; n];
        for (i, (&parent, &relation)) in self.parents.iter().zip(&self.relations).enumerate() {
            match (parent, relation) {
                (None, Relation::Root) => {}
                (Some(p), Relation::Chunk | Relation::Match) if (p as usize) < i => {
                    let level = levels[p as usize] + 1;
                    if usize::from(level) > MAX_DEPTH {
                        return Err(Error::document(i, too_deep()));
                    }
                    levels[i] = level;
                }
                (Some(p), Relation::Chunk | Relation::Match) => {
                    return Err(Error::entry(
                        "parents",
                        i,
                        format!("{p} does not come before it"),
                    ));
                }
                (parent, relation) => {
                    return Err(Error::entry(
                        "relations",
                        i,
                        format!("{relation:?} does not agree with parent {parent:?}"),
                    ));
                }
            }
        }
        let dims: u64 = self.embedding_dims.iter().map(|&d| u64::from(d)).sum();
        if dims != self.embeddings.len() as u64 {
            return Err(Error::columns(format!(
                "documents declare {dims} embedding values but the body carries {}",
                self.embeddings.len()
            )));
        }
        if let Some((k, score)) = self
            .scores
            .iter()
            .enumerate()
            .find(|(_, s)| s.doc as usize >= n)
        {
            return Err(Error::entry(
                "scores",
                k,
                format!("document {} does not exist ({n} documents)", score.doc),
            ));
        }
        Ok(())
    }

    /// Checks that every present tag is a JSON object.
    ///
    /// # Errors
    /// Names the first document whose tags are not.
    pub fn check_tags(&self) -> Result<(), Error> {
        (0..self.len()).try_for_each(|i| self.tags_of(i).map(drop))
    }

    /// Document `i`'s tags (which must exist), parsed; empty when absent.
    ///
    /// # Errors
    /// Tags that are not a JSON object, naming the document.
    pub fn tags_of(&self, i: usize) -> Result<Map<String, Value>, Error> {
        match self.tags.get(i) {
            None => Ok(Map::new()),
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => Ok(map),
                Ok(_) => Err(Error::entry("tags", i, "not a JSON object")),
                Err(e) => Err(Error::entry("tags", i, format!("not valid JSON: {e}"))),
            },
        }
    }
}
