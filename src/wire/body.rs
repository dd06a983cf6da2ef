//! The documents of a message: one columnar [`Body`], the same shape as the
//! contract's `batch` (wit/executor.wit), so a Pea hands a decoded body to its
//! executor without building document trees. A Head or Tail that only routes
//! (replicas, a `polling: all` broadcast, one part back) forwards its bytes
//! without decoding them; one that splits a request over shards or merges
//! parts decodes the columns and copies ranges of them ([`Indexed`]), never
//! building document trees.
//!
//! The columns, their validation and the pre-order flattening of a tree are
//! the jina-doc-columns crate's (crates/doc-columns), which the guest SDK
//! shares: a [`Body`] is its [`Columns`] plus the wire's bytes (codec.rs), the
//! host's [`Document`] trees, and copying ranges of subtrees (ranges.rs).
//! docs/protocol.md gives the byte layout.

mod codec;
mod ranges;
#[cfg(test)]
pub(crate) mod tests;

use std::ops::{Deref, DerefMut};

use crate::document::{Document, NamedScore};
pub use jina_doc_columns::{BytesColumn, Column, Columns, Packed, Relation, Score, StrColumn};
pub use ranges::Indexed;

/// The documents of one request as columns ([`Columns`], whose fields and
/// checks it derefs to). Build one with [`Body::from_documents`] or
/// [`Body::decode`]; both leave it valid, and [`Columns::validate`] checks
/// one built any other way (an executor's output). Borrowing two columns
/// mutably at once goes through `.0` (`&mut body.0.texts`): a deref
/// borrows the whole body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Body(pub Columns);

impl Deref for Body {
    type Target = Columns;
    fn deref(&self) -> &Columns {
        &self.0
    }
}

impl DerefMut for Body {
    fn deref_mut(&mut self) -> &mut Columns {
        &mut self.0
    }
}

impl From<Columns> for Body {
    fn from(columns: Columns) -> Body {
        Body(columns)
    }
}

impl Body {
    /// Flattens document trees (pre-order, without recursion).
    pub fn from_documents(roots: &[Document]) -> Body {
        Body(Columns::from_documents(roots))
    }

    /// Rebuilds the document trees. The body must be valid ([`Columns::validate`]).
    ///
    /// # Errors
    /// Tags that are not a JSON object.
    pub fn into_documents(self) -> Result<Vec<Document>, String> {
        Ok(self.0.into_documents()?)
    }
}

// The host's document tree, as the shared flattening reads and builds it.
jina_doc_columns::impl_node!(Document, NamedScore);

/// `parents` entry of a root document.
pub const NO_PARENT: u32 = u32::MAX;
