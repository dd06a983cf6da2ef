//! What a Head and a Tail do to documents: split a request across shards by
//! document id, and merge the parts that come back. Both copy ranges of
//! columns (a document's subtree is one range of a body in pre-order), and
//! give what splitting and merging document trees gave (`tests` keeps the
//! tree versions and compares the two on random bodies).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use crate::wire::body::Indexed;
use crate::wire::{Body, Envelope, Message, Relation, Score, Status};

/// The envelope of several parts of one request merged: the route they share
/// once, then each part's own entries in order; the first failure of any part
/// as the status; the most severe `after_error`.
///
/// # Panics
/// When `parts` is empty (a Tail and a join merge only what they received,
/// at least one part).
pub fn merge_envelopes(parts: &[Message]) -> Envelope {
    let mut envelope = parts[0].envelope.clone();
    let first = &parts[0].envelope.routes;
    let shared = (0..first.len())
        .take_while(|&k| {
            parts
                .iter()
                .all(|p| p.envelope.routes.get(k) == Some(&first[k]))
        })
        .count();
    envelope.routes.truncate(shared);
    for part in parts {
        envelope
            .routes
            .extend(part.envelope.routes.iter().skip(shared).cloned());
        if let Status::Error {
            executor,
            kind,
            message,
        } = &part.envelope.status
        {
            envelope.fail(executor, *kind, message);
        }
        envelope.after_error = envelope.after_error.max(part.envelope.after_error);
    }
    envelope
}

/// The shard a document id belongs to: FNV-1a (64-bit) of the id's UTF-8 bytes,
/// modulo the number of shards. Stable across runs, machines and versions
/// (docs/pods.md), so an id is always stored, updated and deleted in one shard.
pub fn shard_of(id: &str, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % shards.max(1) as u64) as usize
}

/// Splits the top-level documents (each with its chunks and matches) by shard.
/// Entry `i` is shard `i`'s part, `None` when no document belongs to it. Each
/// document's subtree is a range of the body's columns, copied whole.
///
/// # Errors
/// Tags that are not JSON objects.
pub fn partition(body: Body, shards: usize) -> Result<Vec<Option<Body>>, String> {
    let body = Indexed::new(body)?;
    let mut parts: Vec<Option<Body>> = vec![None; shards];
    for root in body.roots() {
        let id = body.body.ids.get(root).unwrap_or_default();
        parts[shard_of(id, shards)]
            .get_or_insert_default()
            .extend_from(&body, body.subtree(root), None);
    }
    Ok(parts)
}

/// Merges the parts of one request, in the order given (shard order):
/// top-level documents are concatenated, except that a document that comes
/// back from several parts (a query broadcast to every shard) appears once,
/// with what later copies add that the first lacks (each field from the first
/// copy that has it: text, blob, uri, mime type, embedding, chunks; tags and
/// scores by key), and the `matches` of all parts merged: sorted by their first score (by name), best
/// (highest) first, equal scores in id order, and cut to `top_k` (else to the
/// most matches any one part returned for it). Once one document repeats,
/// every document's matches are sorted and cut so.
///
/// Works on column ranges (src/wire/body/ranges.rs); the result is what
/// merging document trees gives, tags' text aside (kept as it came, where
/// a tree would write it again).
///
/// # Errors
/// Tags that are not JSON objects.
pub fn merge(parts: Vec<Body>, top_k: Option<usize>) -> Result<Body, String> {
    if parts.len() == 1 {
        return Ok(parts.into_iter().next().expect("one part"));
    }
    let parts = parts
        .into_iter()
        .map(Indexed::new)
        .collect::<Result<Vec<_>, _>>()?;
    // Each merged document's first copy (part, index), and the later copies
    // (merged document, part, index).
    let mut first: Vec<(usize, usize)> = Vec::new();
    let mut later: Vec<(usize, usize, usize)> = Vec::new();
    let mut position: HashMap<&str, usize> = HashMap::new();
    for (k, part) in parts.iter().enumerate() {
        for root in part.roots() {
            let id = part.body.ids.get(root).unwrap_or_default();
            match position.entry(id) {
                Entry::Occupied(at) => later.push((*at.get(), k, root)),
                Entry::Vacant(slot) => {
                    slot.insert(first.len());
                    first.push((k, root));
                }
            }
        }
    }
    if later.is_empty() {
        return Ok(concat_indexed(&parts));
    }
    later.sort_by_key(|&(at, _, _)| at);
    let mut merged = Body::default();
    let mut copies = Vec::new();
    let mut rest = later.as_slice();
    for (at, &copy) in first.iter().enumerate() {
        let n = rest.iter().take_while(|&&(r, _, _)| r == at).count();
        copies.clear();
        copies.push(copy);
        copies.extend(rest[..n].iter().map(|&(_, k, i)| (k, i)));
        rest = &rest[n..];
        merge_one(&mut merged, &parts, &copies, top_k)?;
    }
    Ok(merged)
}

/// Appends one merged top-level document made of `copies` (part, index), the
/// first the base: each field from the first copy that has it, tags and
/// scores by key (the first copy's value of a key wins), the chunks of the
/// first copy that has some, and the matches of all, sorted and cut.
fn merge_one(
    merged: &mut Body,
    parts: &[Indexed],
    copies: &[(usize, usize)],
    top_k: Option<usize>,
) -> Result<(), String> {
    let at = merged.len() as u32;
    let (k, i) = copies[0];
    merged.ids.extend_range(&parts[k].body.ids, i..i + 1);
    merged.parents.push(None);
    merged.relations.push(Relation::Root);
    macro_rules! first_present {
        ($column:ident) => {
            match copies
                .iter()
                .find(|&&(k, i)| parts[k].body.$column.present[i])
            {
                Some(&(k, i)) => merged
                    .$column
                    .extend_range(&parts[k].body.$column, i..i + 1),
                None => merged.$column.push(None),
            }
        };
    }
    first_present!(texts);
    first_present!(blobs);
    first_present!(uris);
    first_present!(mime_types);
    let tagged: Vec<(usize, usize)> = copies
        .iter()
        .copied()
        .filter(|&(k, i)| parts[k].body.tags.present[i])
        .collect();
    match tagged.as_slice() {
        [] => merged.tags.push(None),
        &[(k, i)] => merged.tags.extend_range(&parts[k].body.tags, i..i + 1),
        several => {
            let mut tags = serde_json::Map::new();
            for &(k, i) in several {
                for (key, value) in parts[k].body.tags_of(i)? {
                    tags.entry(key).or_insert(value);
                }
            }
            let text = (!tags.is_empty()).then(|| serde_json::Value::Object(tags).to_string());
            merged.tags.push(text.as_deref());
        }
    }
    let embedding = copies
        .iter()
        .map(|&(k, i)| parts[k].embedding_of(i))
        .find(|e| !e.is_empty())
        .unwrap_or_default();
    merged.embedding_dims.push(embedding.len() as u32);
    merged.embeddings.extend_from_slice(embedding);
    let mut scores: Vec<&Score> = Vec::new();
    for &(k, i) in copies {
        for score in parts[k].scores_of(i) {
            if !scores.iter().any(|s| s.name == score.name) {
                scores.push(score);
            }
        }
    }
    scores.sort_by(|a, b| a.name.cmp(&b.name));
    merged.scores.extend(scores.into_iter().map(|s| Score {
        doc: at,
        ..s.clone()
    }));
    let chunks = copies
        .iter()
        .map(|&(k, i)| (k, parts[k].children(i).0))
        .find(|(_, chunks)| !chunks.is_empty());
    if let Some((k, chunks)) = chunks {
        merged.extend_from(&parts[k], chunks, Some(at));
    }
    let mut matches: Vec<(usize, usize)> = Vec::new();
    let mut widest = 0;
    for &(k, i) in copies {
        let before = matches.len();
        matches.extend(parts[k].children(i).1.map(|m| (k, m)));
        widest = widest.max(matches.len() - before);
    }
    // No score, or NaN (not a score), ranks last.
    let score = |&(k, m): &(usize, usize)| {
        parts[k]
            .scores_of(m)
            .first()
            .map(|s| s.value)
            .filter(|v| !v.is_nan())
            .unwrap_or(f64::NEG_INFINITY)
    };
    let id = |&(k, m): &(usize, usize)| parts[k].body.ids.get(m).unwrap_or_default();
    matches.sort_by(|a, b| score(b).total_cmp(&score(a)).then_with(|| id(a).cmp(id(b))));
    matches.truncate(top_k.unwrap_or(widest));
    for (k, m) in matches {
        merged.extend_from(&parts[k], parts[k].subtree(m), Some(at));
    }
    Ok(())
}

/// Every part's top-level documents, one after another (for a `--uses-after`
/// reducer, which merges them itself).
///
/// # Errors
/// Tags that are not JSON objects.
pub fn concat(parts: Vec<Body>) -> Result<Body, String> {
    let parts = parts
        .into_iter()
        .map(Indexed::new)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(concat_indexed(&parts))
}

fn concat_indexed(parts: &[Indexed]) -> Body {
    let mut body = Body::default();
    for part in parts {
        body.extend_from(part, 0..part.body.len(), None);
    }
    body
}

#[cfg(test)]
mod tests;
