//! The seam between host documents and the contract's columnar `batch`.
//!
//! A document tree is flattened in depth-first pre-order: a document, then each
//! of its chunks (with their subtrees), then each of its matches (with theirs).
//! Each column of the batch holds one entry per document in that order: strings
//! are packed into one buffer with end offsets, embeddings into one `list<f32>`,
//! scores are a sparse list naming their document. A batch crosses the boundary
//! with a constant number of allocations, whatever its size. docs/wit-contract.md
//! has the rule and an example.

use serde_json::{Map, Value};

use super::bindings::types::{
    BatchParam, BatchResult, NamedScoreParam, OptionalBytesColumnParam, OptionalBytesColumnResult,
    OptionalStringColumnParam, OptionalStringColumnResult, Relation, StringColumnParam,
};
use crate::document::{Document, NamedScore};

/// Packed strings with their end offsets, and which slots are present.
#[derive(Default)]
struct Packed<T: Default> {
    present: Vec<bool>,
    data: T,
    ends: Vec<u32>,
}

impl Packed<String> {
    fn push(&mut self, value: Option<&str>) {
        self.present.push(value.is_some());
        self.data.push_str(value.unwrap_or(""));
        self.ends.push(self.data.len() as u32);
    }

    fn param(&self) -> OptionalStringColumnParam<'_> {
        OptionalStringColumnParam { present: &self.present, data: &self.data, ends: &self.ends }
    }
}

impl Packed<Vec<u8>> {
    fn push(&mut self, value: Option<&[u8]>) {
        self.present.push(value.is_some());
        self.data.extend_from_slice(value.unwrap_or(&[]));
        self.ends.push(self.data.len() as u32);
    }
}

/// A document tree flattened into columns for one call. Strings are copied once
/// into packed buffers; scores borrow from the documents.
pub struct Columns<'a> {
    ids: Packed<String>,
    parents: Vec<Option<u32>>,
    relations: Vec<Relation>,
    texts: Packed<String>,
    blobs: Packed<Vec<u8>>,
    uris: Packed<String>,
    mime_types: Packed<String>,
    tags: Packed<String>,
    embedding_dims: Vec<u32>,
    embeddings: Vec<f32>,
    scores: Vec<NamedScoreParam<'a>>,
}

impl<T: Default> Packed<T> {
    fn with_capacity(n: usize, data: T) -> Self {
        Packed { present: Vec::with_capacity(n), data, ends: Vec::with_capacity(n) }
    }
}

/// Sizes of every column, so each buffer is allocated once.
#[derive(Default)]
struct Totals {
    docs: usize,
    ids: usize,
    texts: usize,
    floats: usize,
}

impl Totals {
    fn of(roots: &[Document]) -> Totals {
        let mut totals = Totals::default();
        let mut stack: Vec<&Document> = roots.iter().collect();
        while let Some(doc) = stack.pop() {
            totals.docs += 1;
            totals.ids += doc.id.len();
            totals.texts += doc.text.as_ref().map_or(0, String::len);
            totals.floats += doc.embedding.as_ref().map_or(0, Vec::len);
            stack.extend(doc.chunks.iter().chain(&doc.matches));
        }
        totals
    }
}

impl<'a> Columns<'a> {
    pub fn new(roots: &'a [Document]) -> Self {
        let totals = Totals::of(roots);
        let n = totals.docs;
        let mut columns = Columns {
            ids: Packed::with_capacity(n, String::with_capacity(totals.ids)),
            parents: Vec::with_capacity(n),
            relations: Vec::with_capacity(n),
            texts: Packed::with_capacity(n, String::with_capacity(totals.texts)),
            blobs: Packed::with_capacity(n, Vec::new()),
            uris: Packed::with_capacity(n, String::new()),
            mime_types: Packed::with_capacity(n, String::new()),
            tags: Packed::with_capacity(n, String::new()),
            embedding_dims: Vec::with_capacity(n),
            embeddings: Vec::with_capacity(totals.floats),
            scores: Vec::new(),
        };
        // Pre-order without recursion: a stack of (document, parent, relation),
        // children pushed in reverse so they pop in order.
        let mut stack: Vec<(&'a Document, Option<u32>, Relation)> =
            roots.iter().rev().map(|d| (d, None, Relation::Root)).collect();
        let mut tags_text = String::new();
        while let Some((doc, parent, relation)) = stack.pop() {
            let index = columns.parents.len() as u32;
            columns.ids.push(Some(&doc.id));
            columns.parents.push(parent);
            columns.relations.push(relation);
            columns.texts.push(doc.text.as_deref());
            columns.blobs.push(doc.blob.as_deref());
            columns.uris.push(doc.uri.as_deref());
            columns.mime_types.push(doc.mime_type.as_deref());
            if doc.tags.is_empty() {
                columns.tags.push(None);
            } else {
                tags_text.clear();
                tags_text.push_str(&Value::Object(doc.tags.clone()).to_string());
                columns.tags.push(Some(&tags_text));
            }
            let embedding = doc.embedding.as_deref().unwrap_or(&[]);
            columns.embedding_dims.push(embedding.len() as u32);
            columns.embeddings.extend_from_slice(embedding);
            columns.scores.extend(doc.scores.iter().map(|(name, s)| NamedScoreParam {
                doc: index,
                name,
                value: s.value,
                op_name: s.op_name.as_deref(),
                description: s.description.as_deref(),
            }));
            for m in doc.matches.iter().rev() {
                stack.push((m, Some(index), Relation::Match));
            }
            for chunk in doc.chunks.iter().rev() {
                stack.push((chunk, Some(index), Relation::Chunk));
            }
        }
        columns
    }

    /// The batch as the generated bindings take it.
    pub fn param(&self) -> BatchParam<'_> {
        BatchParam {
            ids: StringColumnParam { data: &self.ids.data, ends: &self.ids.ends },
            parents: &self.parents,
            relations: &self.relations,
            texts: self.texts.param(),
            blobs: OptionalBytesColumnParam { present: &self.blobs.present, data: &self.blobs.data, ends: &self.blobs.ends },
            uris: self.uris.param(),
            mime_types: self.mime_types.param(),
            tags: self.tags.param(),
            embedding_dims: &self.embedding_dims,
            embeddings: &self.embeddings,
            scores: &self.scores,
        }
    }
}

/// Checks one column's offsets: `n` ends, non-decreasing, the last at `len`.
fn check_ends(column: &str, ends: &[u32], len: usize, n: usize) -> Result<(), String> {
    if ends.len() != n {
        return Err(format!("column {column} has {} entries for {n} documents", ends.len()));
    }
    let mut previous = 0u32;
    for (i, &end) in ends.iter().enumerate() {
        if end < previous {
            return Err(format!("{column}[{i}]: offsets go backwards"));
        }
        previous = end;
    }
    if previous as usize != len {
        return Err(format!("column {column}: offsets end at {previous}, data is {len} bytes"));
    }
    Ok(())
}

fn span(ends: &[u32], i: usize) -> std::ops::Range<usize> {
    let start = if i == 0 { 0 } else { ends[i - 1] as usize };
    start..ends[i] as usize
}

/// A checked string column, read by document index.
struct Strings<'b> {
    name: &'static str,
    present: Option<&'b [bool]>,
    data: &'b str,
    ends: &'b [u32],
}

impl<'b> Strings<'b> {
    fn new(name: &'static str, present: Option<&'b [bool]>, data: &'b str, ends: &'b [u32], n: usize) -> Result<Self, String> {
        check_ends(name, ends, data.len(), n)?;
        if let Some(present) = present
            && present.len() != n
        {
            return Err(format!("column {name} has {} presence flags for {n} documents", present.len()));
        }
        Ok(Strings { name, present, data, ends })
    }

    fn get(&self, i: usize) -> Result<Option<String>, String> {
        let range = span(self.ends, i);
        if self.present.is_some_and(|p| !p[i]) {
            return if range.is_empty() { Ok(None) } else { Err(format!("{}[{i}]: absent but has data", self.name)) };
        }
        match self.data.get(range) {
            Some(text) => Ok(Some(text.to_owned())),
            None => Err(format!("{}[{i}]: span does not fall on a UTF-8 boundary", self.name)),
        }
    }
}

fn optional<'b>(name: &'static str, column: &'b OptionalStringColumnResult, n: usize) -> Result<Strings<'b>, String> {
    Strings::new(name, Some(&column.present), &column.data, &column.ends, n)
}

/// Rebuilds the document trees of a batch a guest returned. The guest is not
/// trusted: every column length, offset, index, relation and tag is checked.
///
/// # Errors
/// A message naming the column and the document index.
pub fn from_batch(batch: BatchResult) -> Result<Vec<Document>, String> {
    let BatchResult { ids, parents, relations, texts, blobs, uris, mime_types, tags, embedding_dims, embeddings, scores } =
        batch;
    let n = ids.ends.len();
    let ids = Strings::new("ids", None, &ids.data, &ids.ends, n)?;
    let (texts_col, uris_col, mimes_col, tags_col) = (
        optional("texts", &texts, n)?,
        optional("uris", &uris, n)?,
        optional("mime_types", &mime_types, n)?,
        optional("tags", &tags, n)?,
    );
    let OptionalBytesColumnResult { present: blob_present, data: blob_data, ends: blob_ends } = &blobs;
    check_ends("blobs", blob_ends, blob_data.len(), n)?;
    if blob_present.len() != n || parents.len() != n || relations.len() != n || embedding_dims.len() != n {
        return Err(format!("the batch's columns do not all have {n} entries"));
    }
    let total_dims: u64 = embedding_dims.iter().map(|&d| u64::from(d)).sum();
    if total_dims != embeddings.len() as u64 {
        return Err(format!("documents declare {total_dims} embedding values but the batch carries {}", embeddings.len()));
    }

    let mut flat: Vec<Document> = Vec::with_capacity(n);
    let mut offset = 0usize;
    for i in 0..n {
        match (parents[i], relations[i]) {
            (None, Relation::Root) => {}
            (Some(p), Relation::Chunk | Relation::Match) if (p as usize) < i => {}
            (Some(p), Relation::Chunk | Relation::Match) => return Err(format!("parents[{i}]: {p} does not come before it")),
            (parent, relation) => {
                return Err(format!("relations[{i}]: {relation:?} does not agree with parent {parent:?}"));
            }
        }
        let tags = match tags_col.get(i)? {
            None => Map::new(),
            Some(text) => match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(map)) => map,
                Ok(_) => return Err(format!("tags[{i}]: not a JSON object")),
                Err(e) => return Err(format!("tags[{i}]: not valid JSON: {e}")),
            },
        };
        let blob = if blob_present[i] {
            Some(blob_data[span(blob_ends, i)].to_vec())
        } else if span(blob_ends, i).is_empty() {
            None
        } else {
            return Err(format!("blobs[{i}]: absent but has data"));
        };
        let dim = embedding_dims[i] as usize;
        let embedding = (dim > 0).then(|| embeddings[offset..offset + dim].to_vec());
        offset += dim;
        flat.push(Document {
            id: ids.get(i)?.unwrap_or_default(),
            text: texts_col.get(i)?,
            blob,
            uri: uris_col.get(i)?,
            mime_type: mimes_col.get(i)?,
            embedding,
            tags,
            ..Default::default()
        });
    }
    for score in scores {
        let doc = flat
            .get_mut(score.doc as usize)
            .ok_or_else(|| format!("scores: document {} does not exist ({n} documents)", score.doc))?;
        doc.scores.insert(score.name, NamedScore { value: score.value, op_name: score.op_name, description: score.description });
    }
    // A batch of roots only (the common case) is already the answer.
    if parents.iter().all(Option::is_none) {
        return Ok(flat);
    }
    // Attach children to parents from the back: every child comes after its
    // parent, so when we reach a document all its children are attached.
    // Children arrive in reverse, so each list is reversed at the end.
    let mut roots = Vec::new();
    while let Some(doc) = flat.pop() {
        let i = flat.len();
        match parents[i] {
            None => roots.push(doc),
            Some(p) => {
                let parent = &mut flat[p as usize];
                match relations[i] {
                    Relation::Chunk => parent.chunks.push(doc),
                    _ => parent.matches.push(doc),
                }
            }
        }
    }
    roots.reverse();
    let mut stack: Vec<&mut Document> = roots.iter_mut().collect();
    while let Some(doc) = stack.pop() {
        doc.chunks.reverse();
        doc.matches.reverse();
        stack.extend(doc.chunks.iter_mut().chain(doc.matches.iter_mut()));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::bindings::types::StringColumnResult;

    /// What a guest would hand back if it returned the batch unchanged.
    fn echo(columns: &Columns<'_>) -> BatchResult {
        let p = columns.param();
        let opt = |c: OptionalStringColumnParam<'_>| OptionalStringColumnResult {
            present: c.present.to_vec(),
            data: c.data.to_owned(),
            ends: c.ends.to_vec(),
        };
        BatchResult {
            ids: StringColumnResult { data: p.ids.data.to_owned(), ends: p.ids.ends.to_vec() },
            parents: p.parents.to_vec(),
            relations: p.relations.to_vec(),
            texts: opt(p.texts),
            blobs: OptionalBytesColumnResult {
                present: p.blobs.present.to_vec(),
                data: p.blobs.data.to_vec(),
                ends: p.blobs.ends.to_vec(),
            },
            uris: opt(p.uris),
            mime_types: opt(p.mime_types),
            tags: opt(p.tags),
            embedding_dims: p.embedding_dims.to_vec(),
            embeddings: p.embeddings.to_vec(),
            scores: p
                .scores
                .iter()
                .map(|s| super::super::bindings::types::NamedScoreResult {
                    doc: s.doc,
                    name: s.name.to_owned(),
                    value: s.value,
                    op_name: s.op_name.map(str::to_owned),
                    description: s.description.map(str::to_owned),
                })
                .collect(),
        }
    }

    fn tree() -> Vec<Document> {
        let leaf = |id: &str| Document { id: id.into(), text: Some(format!("text of {id} ✓")), ..Default::default() };
        let mut q = leaf("q");
        q.embedding = Some(vec![1.0, 2.0]);
        q.blob = Some(vec![0, 255]);
        q.tags = serde_json::json!({"k": [1, "two"]}).as_object().unwrap().clone();
        q.scores.insert("cosine".into(), NamedScore { value: 0.5, op_name: Some("op".into()), description: None });
        let mut q1 = leaf("q-1");
        q1.matches = vec![Document { embedding: Some(vec![3.0]), ..leaf("m") }];
        q.chunks = vec![leaf("q-0"), q1];
        q.matches = vec![leaf("q-m")];
        vec![q, Document { id: "r".into(), ..Default::default() }]
    }

    #[test]
    fn columns_round_trip_a_tree() {
        let docs = tree();
        let columns = Columns::new(&docs);
        assert_eq!(columns.parents, vec![None, Some(0), Some(0), Some(2), Some(0), None]);
        assert_eq!(from_batch(echo(&columns)).unwrap(), docs);
    }

    #[test]
    fn deep_trees_do_not_recurse() {
        let mut doc = Document { id: "leaf".into(), ..Default::default() };
        for i in 0..100_000 {
            doc = Document { id: i.to_string(), chunks: vec![doc], ..Default::default() };
        }
        let docs = vec![doc];
        let back = from_batch(echo(&Columns::new(&docs))).unwrap();
        assert_eq!(back[0].id, "99999");
        // Dropping deep trees recurses in Drop; forget them rather than overflow
        // the test thread's stack (the executor's own limits are elsewhere).
        std::mem::forget(back);
        std::mem::forget(docs);
    }

    fn rejected(mutate: impl FnOnce(&mut BatchResult)) -> String {
        let docs = tree();
        let mut batch = echo(&Columns::new(&docs));
        mutate(&mut batch);
        from_batch(batch).expect_err("malformed output must be rejected")
    }

    #[test]
    fn malformed_output_is_rejected_not_trusted() {
        assert!(rejected(|b| { b.parents.pop(); }).contains("columns"));
        assert!(rejected(|b| b.ids.ends[1] = 0).contains("backwards"));
        assert!(rejected(|b| b.ids.data.push('x')).contains("ids"));
        // A span that ends inside the three-byte `✓`.
        assert!(rejected(|b| {
            let at = b.texts.data.find('✓').unwrap() + 1;
            b.texts.ends[0] = at as u32;
        })
        .contains("UTF-8"));
        assert!(rejected(|b| b.texts.present[0] = false).contains("absent"));
        assert!(rejected(|b| b.parents[1] = Some(4)).contains("come before"));
        assert!(rejected(|b| b.relations[0] = Relation::Chunk).contains("agree"));
        assert!(rejected(|b| b.embedding_dims[0] = 5).contains("embedding"));
        assert!(rejected(|b| b.scores[0].doc = 99).contains("does not exist"));
        assert!(rejected(|b| {
            b.tags.data = "[1]".into();
            b.tags.ends = vec![3; 6];
        })
        .contains("not a JSON object"));
        assert!(rejected(|b| b.blobs.present[0] = false).contains("blobs[0]"));
    }
}
