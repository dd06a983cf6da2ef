//! The HNSW graph (Malkov & Yashunin, "Efficient and robust approximate
//! nearest neighbor search using Hierarchical Navigable Small World graphs",
//! 2016): insertion with the neighbour-selection heuristic (their algorithm 4),
//! beam search per layer, tombstones for deletes and a compaction that repairs
//! the links around them.
//!
//! Nodes live in slots `0..slots()`, each one fixed-size block in one buffer
//! (its vector, `1 / |vector|`, its tombstone flag and its level-0 links side
//! by side, as hnswlib lays out its level 0), so the search's visit of a node
//! is one run of memory, not four arrays; upper-level links per node. A delete only
//! marks its slot (searches pass through it, never return it); [`compact`]
//! reconnects its neighbours and drops it, renumbering the slots.
//!
//! [`compact`]: Graph::compact

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// Nodes per page of blocks: 1,024 (at 384-d with `m` 16, 1.7 MB a page).
const PAGE: usize = 1024;

/// Levels above this are never drawn (one in `m^16` nodes would reach it).
pub const MAX_LEVEL: u8 = 16;

/// The longest vector stored (a request's, or a snapshot's `dim`).
pub const MAX_DIM: usize = 65_536;

/// How two vectors are compared. Internally every metric is a distance
/// (smaller is closer); [`Metric::score`] turns it back into a score where
/// higher is better, as the Pod's merge sorts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// `1 - cos(a, b)`; score: the cosine similarity.
    Cosine,
    /// `-a·b`; score: the dot product.
    Dot,
    /// `|a - b|²`; score: minus the Euclidean distance.
    L2,
}

impl Metric {
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "cosine" => Ok(Metric::Cosine),
            "dot" | "ip" => Ok(Metric::Dot),
            "l2" | "euclidean" => Ok(Metric::L2),
            other => Err(format!(
                "metric {other:?} is not one of \"cosine\", \"dot\", \"l2\""
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
            Metric::L2 => "l2",
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Metric::Cosine => 0,
            Metric::Dot => 1,
            Metric::L2 => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        [Metric::Cosine, Metric::Dot, Metric::L2]
            .into_iter()
            .find(|m| m.code() == code)
    }

    /// The score reported for a distance: higher is better.
    pub fn score(self, distance: f32) -> f64 {
        let d = f64::from(distance);
        match self {
            Metric::Cosine => 1.0 - d,
            Metric::Dot => -d,
            Metric::L2 => -d.max(0.0).sqrt(),
        }
    }
}

/// The dot product of two vectors of one length: 128-bit SIMD on wasm32
/// (which every wasmtime this project supports runs), else the SDK's.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // simd128 is part of the module: an engine without it refuses to load
    // the component at all (which is why wasm32 allows the call as safe).
    #[cfg(target_arch = "wasm32")]
    {
        simd::dot(a, b)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        jina_guest_sdk::embedding::dot(a, b)
    }
}

/// `|a - b|²`, as [`dot`].
fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "wasm32")]
    {
        simd::l2_squared(a, b)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        l2_squared_scalar(a, b)
    }
}

#[cfg(target_arch = "wasm32")]
mod simd {
    use core::arch::wasm32::*;

    /// Loads four floats at `i` (unaligned loads are allowed in wasm).
    #[target_feature(enable = "simd128")]
    fn load(v: &[f32], i: usize) -> v128 {
        let four = &v[i..i + 4];
        // SAFETY: `four` is four readable floats; v128_load has no
        // alignment requirement.
        unsafe { v128_load(four.as_ptr().cast()) }
    }

    #[target_feature(enable = "simd128")]
    fn sum(v: v128) -> f32 {
        f32x4_extract_lane::<0>(v)
            + f32x4_extract_lane::<1>(v)
            + f32x4_extract_lane::<2>(v)
            + f32x4_extract_lane::<3>(v)
    }

    /// `a · b + c`: one fused multiply-add on an FMA CPU (wasmtime's default
    /// for relaxed SIMD), else a multiply and an add.
    #[inline(always)]
    fn madd(a: v128, b: v128, c: v128) -> v128 {
        #[cfg(target_feature = "relaxed-simd")]
        {
            f32x4_relaxed_madd(a, b, c)
        }
        #[cfg(not(target_feature = "relaxed-simd"))]
        {
            f32x4_add(f32x4_mul(a, b), c)
        }
    }

    // Why 32 floats per step, straight-line: the engine checks for
    // interruption at every loop header, and that check's (cold) call
    // clobbers every vector register, so Cranelift keeps any vector carried
    // around a loop on the stack, stored and reloaded on every iteration
    // (docs/hnsw.md). Here one partial sum goes around the loop per 32
    // floats, not two per 8; inside a step the products chain in registers.

    /// `Σ a[i] · b[i]` over 32 floats, as four lanes.
    ///
    /// # Safety
    ///
    /// `a` and `b` each have 32 readable floats.
    #[inline(always)]
    unsafe fn dot32(a: *const f32, b: *const f32) -> v128 {
        // SAFETY: as the caller promises; v128_load has no alignment
        // requirement.
        unsafe {
            let l = |p: *const f32, k: usize| v128_load(p.add(4 * k).cast());
            let mut s0 = f32x4_mul(l(a, 0), l(b, 0));
            let mut s1 = f32x4_mul(l(a, 1), l(b, 1));
            s0 = madd(l(a, 2), l(b, 2), s0);
            s1 = madd(l(a, 3), l(b, 3), s1);
            s0 = madd(l(a, 4), l(b, 4), s0);
            s1 = madd(l(a, 5), l(b, 5), s1);
            s0 = madd(l(a, 6), l(b, 6), s0);
            s1 = madd(l(a, 7), l(b, 7), s1);
            f32x4_add(s0, s1)
        }
    }

    /// `Σ (a[i] - b[i])²` over 32 floats, as four lanes.
    ///
    /// # Safety
    ///
    /// As [`dot32`].
    #[inline(always)]
    unsafe fn l2_32(a: *const f32, b: *const f32) -> v128 {
        // SAFETY: as the caller promises.
        unsafe {
            let d = |k: usize| {
                f32x4_sub(
                    v128_load(a.add(4 * k).cast()),
                    v128_load(b.add(4 * k).cast()),
                )
            };
            let (d0, d1) = (d(0), d(1));
            let mut s0 = f32x4_mul(d0, d0);
            let mut s1 = f32x4_mul(d1, d1);
            for k in (2..8).step_by(2) {
                let (e0, e1) = (d(k), d(k + 1));
                s0 = madd(e0, e0, s0);
                s1 = madd(e1, e1, s1);
            }
            f32x4_add(s0, s1)
        }
    }

    #[target_feature(enable = "simd128")]
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let mut acc = f32x4_splat(0.0);
        let mut i = 0;
        while i + 32 <= n {
            // SAFETY: i + 32 <= n, the length of both.
            acc = f32x4_add(acc, unsafe { dot32(a.as_ptr().add(i), b.as_ptr().add(i)) });
            i += 32;
        }
        while i + 4 <= n {
            acc = madd(load(a, i), load(b, i), acc);
            i += 4;
        }
        let tail: f32 = a[i..n].iter().zip(&b[i..n]).map(|(x, y)| x * y).sum();
        sum(acc) + tail
    }

    #[target_feature(enable = "simd128")]
    pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let mut acc = f32x4_splat(0.0);
        let mut i = 0;
        while i + 32 <= n {
            // SAFETY: i + 32 <= n, the length of both.
            acc = f32x4_add(acc, unsafe { l2_32(a.as_ptr().add(i), b.as_ptr().add(i)) });
            i += 32;
        }
        while i + 4 <= n {
            let d = f32x4_sub(load(a, i), load(b, i));
            acc = madd(d, d, acc);
            i += 4;
        }
        let tail: f32 = a[i..n]
            .iter()
            .zip(&b[i..n])
            .map(|(x, y)| (x - y) * (x - y))
            .sum();
        sum(acc) + tail
    }
}

/// `|a - b|²` with eight independent sums (see `embedding::dot`).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
fn l2_squared_scalar(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (a8.remainder(), b8.remainder());
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| (x - y) * (x - y)).sum();
    acc.iter().sum::<f32>() + tail
}

/// `1 / |v|`, 0 for a zero vector (which then scores cosine 0 against all).
fn inverse_norm(v: &[f32]) -> f32 {
    let n = dot(v, v).sqrt();
    if n > 0.0 && n.is_finite() {
        1.0 / n
    } else {
        0.0
    }
}

/// The build and shape parameters (`with: {m, ef_construction}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub metric: Metric,
    /// Links per node on levels above 0 (twice as many on level 0).
    pub m: usize,
    /// Beam width while inserting.
    pub ef_construction: usize,
}

/// A node and its distance to whatever is being searched for.
#[derive(Clone, Copy, Debug)]
struct Near {
    dist: f32,
    slot: u32,
}

impl PartialEq for Near {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Near {}

impl Ord for Near {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist
            .total_cmp(&other.dist)
            .then(self.slot.cmp(&other.slot))
    }
}

impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Which slots a search has seen: a stamp per slot, so clearing is O(1).
#[derive(Debug, Default)]
struct Visited {
    stamps: Vec<u32>,
    stamp: u32,
}

impl Visited {
    fn reset(&mut self, slots: usize) {
        self.stamps.resize(slots, 0);
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.stamps.fill(0);
            self.stamp = 1;
        }
    }

    /// Marks `slot`; whether it was new.
    fn insert(&mut self, slot: u32) -> bool {
        let s = &mut self.stamps[slot as usize];
        let new = *s != self.stamp;
        *s = self.stamp;
        new
    }
}

/// What a beam search works in, kept from one search to the next so a
/// query allocates nothing once the heaps have grown to `ef`: the visited
/// stamps, the candidates (closest first) and the results (worst first).
#[derive(Debug, Default)]
struct Scratch {
    visited: Visited,
    candidates: BinaryHeap<Reverse<Near>>,
    results: BinaryHeap<Near>,
}

/// A query prepared for one metric.
struct Query<'a> {
    vector: &'a [f32],
    /// `1 / |vector|` for cosine, else unused.
    inverse_norm: f32,
}

/// `u32`s seen as the `f32`s whose bits they hold (the node blocks keep
/// vectors that way).
fn as_f32s(bits: &[u32]) -> &[f32] {
    // SAFETY: f32 and u32 have the same size and alignment, and every bit
    // pattern is a valid f32.
    unsafe { std::slice::from_raw_parts(bits.as_ptr().cast::<f32>(), bits.len()) }
}

/// The graph and the vectors it links. Document fields (id, text, tags) live
/// beside it in the executor's `Store`, by the same slot numbers.
///
/// Node block (`stride` u32s per slot, at `slot * stride`): `dim` floats of
/// the vector (as bits), `1 / |vector|` (cosine; 0 otherwise), the tombstone
/// flag (0 or 1), the level-0 link count, then `2m` level-0 links. A beam
/// search computes a distance for every neighbour it visits and then reads
/// that neighbour's tombstone flag and, later, its links: all in one block,
/// where separate arrays cost a cache miss each.
///
/// The blocks are kept in pages of [`PAGE`] nodes, each allocated once at its
/// full size: one growing buffer would be copied into one twice its size as
/// it grows, and at a quarter of a million 384-d nodes that copy (both
/// buffers live at once, the old one left free in linear memory, which never
/// shrinks) doubled a shard's memory high-water mark (docs/hnsw.md).
#[derive(Debug)]
pub struct Graph {
    shape: Shape,
    /// Floats per vector; 0 until the first insert.
    dim: usize,
    /// `dim + 3 + 2m` once `dim` is known.
    stride: usize,
    /// The node blocks, [`PAGE`] to a page (the last one filling up).
    pages: Vec<Vec<u32>>,
    /// Per slot, its top level.
    levels: Vec<u8>,
    /// Slots marked deleted.
    tombstones: usize,
    /// Per slot, for each level `1..=level`, `1 + m` values: count, links.
    upper: Vec<Vec<u32>>,
    /// The node searches start from: one of the highest level.
    entry: Option<u32>,
    /// A search's working set, kept between searches (see [`Scratch`]).
    scratch: RefCell<Scratch>,
}

impl Graph {
    pub fn new(shape: Shape) -> Self {
        Graph {
            shape,
            dim: 0,
            stride: 0,
            pages: Vec::new(),
            levels: Vec::new(),
            tombstones: 0,
            upper: Vec::new(),
            entry: None,
            scratch: RefCell::default(),
        }
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Floats per vector, 0 while nothing was ever inserted.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Every slot, deleted or not.
    pub fn slots(&self) -> usize {
        self.levels.len()
    }

    pub fn tombstones(&self) -> usize {
        self.tombstones
    }

    /// `slot`'s block.
    fn node(&self, slot: u32) -> &[u32] {
        let s = slot as usize;
        let at = (s % PAGE) * self.stride;
        &self.pages[s / PAGE][at..at + self.stride]
    }

    fn node_mut(&mut self, slot: u32) -> &mut [u32] {
        let s = slot as usize;
        let at = (s % PAGE) * self.stride;
        &mut self.pages[s / PAGE][at..at + self.stride]
    }

    /// Appends a zeroed block for the next slot and returns it to be
    /// filled; the caller pushes its level.
    fn push_zeroed(&mut self) -> &mut [u32] {
        let (stride, full) = (self.stride, PAGE * self.stride);
        if self.pages.last().is_none_or(|p| p.len() >= full) {
            self.pages.push(Vec::with_capacity(full));
        }
        let page = self.pages.last_mut().expect("a page was just ensured");
        // A loaded snapshot's last page holds only its nodes: it grows to a
        // whole page once, at the first insert after the load.
        page.reserve_exact(full - page.len());
        let at = page.len();
        page.resize(at + stride, 0);
        &mut page[at..]
    }

    /// Appends a whole block (`stride` values) for the next slot.
    fn push_block(&mut self, block: &[u32]) {
        self.push_zeroed().copy_from_slice(block);
    }

    pub fn is_deleted(&self, slot: u32) -> bool {
        self.node(slot)[self.dim + 1] != 0
    }

    pub fn vector(&self, slot: u32) -> &[f32] {
        as_f32s(self.vector_bits(slot))
    }

    /// `slot`'s vector as the bits of its floats.
    pub fn vector_bits(&self, slot: u32) -> &[u32] {
        &self.node(slot)[..self.dim]
    }

    /// `1 / |vector|` of `slot` (cosine; 0 for the other metrics).
    fn inverse_norm_of(&self, slot: u32) -> f32 {
        f32::from_bits(self.node(slot)[self.dim])
    }

    /// `slot`'s level-0 link count and its `2m` link places, as the snapshot
    /// stores them.
    #[cfg(test)]
    pub fn links0_block(&self, slot: u32) -> &[u32] {
        &self.node(slot)[self.dim + 2..]
    }

    /// Appends a node block (no links, not deleted) and its level.
    fn push_node(&mut self, vector: &[f32], level: u8) {
        let inverse = match self.shape.metric {
            Metric::Cosine => inverse_norm(vector),
            _ => 0.0,
        };
        let mut block = Vec::with_capacity(self.stride);
        block.extend(vector.iter().map(|x| x.to_bits()));
        block.extend([inverse.to_bits(), 0]);
        block.resize(self.stride, 0);
        self.push_block(&block);
        self.levels.push(level);
    }

    #[cfg(test)]
    pub fn entry(&self) -> Option<u32> {
        self.entry
    }

    fn m0(&self) -> usize {
        2 * self.shape.m
    }

    /// The links of `slot` on `level` (which the node must have).
    pub fn links(&self, slot: u32, level: usize) -> &[u32] {
        let s = slot as usize;
        if level == 0 {
            let block = &self.node(slot)[self.dim + 2..];
            let n = block[0] as usize;
            &block[1..1 + n]
        } else {
            let list = &self.upper[s];
            let base = (level - 1) * (self.shape.m + 1);
            let n = list[base] as usize;
            &list[base + 1..base + 1 + n]
        }
    }

    fn set_links(&mut self, slot: u32, level: usize, links: &[u32]) {
        let s = slot as usize;
        let (list, base, cap) = if level == 0 {
            let (dim, cap) = (self.dim, 2 * self.shape.m);
            (self.node_mut(slot), dim + 2, cap)
        } else {
            let cap = self.shape.m;
            (&mut self.upper[s][..], (level - 1) * (cap + 1), cap)
        };
        debug_assert!(links.len() <= cap);
        list[base] = links.len() as u32;
        list[base + 1..base + 1 + links.len()].copy_from_slice(links);
    }

    fn query<'a>(&self, vector: &'a [f32]) -> Query<'a> {
        Query {
            vector,
            inverse_norm: match self.shape.metric {
                Metric::Cosine => inverse_norm(vector),
                _ => 0.0,
            },
        }
    }

    fn distance(&self, q: &Query<'_>, slot: u32) -> f32 {
        self.distance_to(q, self.node(slot))
    }

    /// The distance to the node whose block this is.
    fn distance_to(&self, q: &Query<'_>, block: &[u32]) -> f32 {
        // The vector and its inverse norm, side by side.
        let v = as_f32s(&block[..self.dim]);
        match self.shape.metric {
            Metric::Cosine => {
                1.0 - dot(q.vector, v) * q.inverse_norm * f32::from_bits(block[self.dim])
            }
            Metric::Dot => -dot(q.vector, v),
            Metric::L2 => l2_squared(q.vector, v),
        }
    }

    fn between(&self, a: u32, b: u32) -> f32 {
        let q = Query {
            vector: self.vector(a),
            inverse_norm: self.inverse_norm_of(a),
        };
        self.distance(&q, b)
    }

    /// Appends a node for `vector` at `level` and links it in. The caller
    /// checks the dimension (every vector the same length, not empty).
    pub fn insert(&mut self, vector: &[f32], level: u8) -> u32 {
        assert!(
            self.dim == 0 || vector.len() == self.dim,
            "dimension checked by the caller"
        );
        if self.stride == 0 {
            self.dim = vector.len();
            self.stride = self.dim + 3 + self.m0();
        }
        let slot = self.slots() as u32;
        let level = level.min(MAX_LEVEL);
        self.push_node(vector, level);
        self.upper
            .push(vec![0; usize::from(level) * (self.shape.m + 1)]);

        let Some(entry) = self.entry else {
            self.entry = Some(slot);
            return slot;
        };
        let top = usize::from(self.levels[entry as usize]);
        let q = self.query(vector);
        let mut nearest = vec![Near {
            dist: self.distance(&q, entry),
            slot: entry,
        }];
        let mut found = Vec::new();
        for l in (usize::from(level) + 1..=top).rev() {
            self.search_layer(&q, &nearest, 1, l, slot, &mut found);
            if !found.is_empty() {
                std::mem::swap(&mut nearest, &mut found);
            }
        }
        let mut connections = Vec::new();
        for l in (0..=usize::from(level).min(top)).rev() {
            let ef = self.shape.ef_construction;
            self.search_layer(&q, &nearest, ef, l, slot, &mut found);
            if !found.is_empty() {
                std::mem::swap(&mut nearest, &mut found);
            }
            self.select(&nearest, self.shape.m, &mut connections);
            self.set_links(slot, l, &connections);
            for &other in &connections {
                self.link(other, slot, l);
            }
        }
        if level > self.levels[entry as usize] {
            self.entry = Some(slot);
        }
        slot
    }

    /// Adds `to` to the links of `from` on `level`, pruning with the heuristic
    /// when the list is full.
    fn link(&mut self, from: u32, to: u32, level: usize) {
        let cap = if level == 0 { self.m0() } else { self.shape.m };
        let current = self.links(from, level);
        if current.contains(&to) {
            return;
        }
        if current.len() < cap {
            let mut links = current.to_vec();
            links.push(to);
            self.set_links(from, level, &links);
            return;
        }
        let mut candidates: Vec<Near> = current
            .iter()
            .chain([&to])
            .map(|&s| Near {
                dist: self.between(from, s),
                slot: s,
            })
            .collect();
        candidates.sort_unstable();
        let mut kept = Vec::with_capacity(cap);
        self.select(&candidates, cap, &mut kept);
        self.set_links(from, level, &kept);
    }

    /// The neighbour-selection heuristic: walking `candidates` (sorted,
    /// closest first), keep one only if it is closer to the base than to every
    /// one kept so far, up to `m`. Keeps links pointing in diverse directions,
    /// which is what makes clustered data searchable.
    fn select(&self, candidates: &[Near], m: usize, kept: &mut Vec<u32>) {
        kept.clear();
        for c in candidates {
            if kept.len() >= m {
                break;
            }
            if kept.iter().all(|&k| self.between(c.slot, k) >= c.dist) {
                kept.push(c.slot);
            }
        }
    }

    /// Beam search of width `ef` on `level` from `entry`: into `out`, closest
    /// first. Deleted nodes are walked through but not returned; `skip` (the
    /// node being inserted) neither.
    fn search_layer(
        &self,
        q: &Query<'_>,
        entry: &[Near],
        ef: usize,
        level: usize,
        skip: u32,
        out: &mut Vec<Near>,
    ) {
        let mut scratch = self.scratch.borrow_mut();
        let Scratch {
            visited,
            candidates,
            results,
        } = &mut *scratch;
        visited.reset(self.slots());
        candidates.clear();
        results.clear();
        if (skip as usize) < self.slots() {
            visited.insert(skip);
        }
        for &e in entry {
            if visited.insert(e.slot) {
                candidates.push(Reverse(e));
                if !self.is_deleted(e.slot) {
                    results.push(e);
                }
            }
        }
        while results.len() > ef {
            results.pop();
        }
        let mut bound = match results.peek() {
            Some(worst) if results.len() >= ef => worst.dist,
            _ => f32::INFINITY,
        };
        let flag = self.dim + 1;
        while let Some(Reverse(current)) = candidates.pop() {
            if current.dist > bound {
                break;
            }
            for &next in self.links(current.slot, level) {
                if !visited.insert(next) {
                    continue;
                }
                // One look-up of the block for the distance and the flag.
                let block = self.node(next);
                let dist = self.distance_to(q, block);
                if dist < bound || results.len() < ef {
                    let near = Near { dist, slot: next };
                    candidates.push(Reverse(near));
                    if block[flag] == 0 {
                        results.push(near);
                        if results.len() > ef {
                            results.pop();
                        }
                        if results.len() >= ef {
                            bound = results.peek().map_or(f32::INFINITY, |w| w.dist);
                        }
                    }
                }
            }
        }
        out.clear();
        out.extend(results.drain());
        out.sort_unstable();
    }

    /// The live nodes nearest to `vector` (of length `dim`) that a beam of
    /// `ef` (at least `k`) on level 0 finds: `(slot, distance)`, closest
    /// first, at least `k` of them when there are that many (the caller cuts
    /// to `k` after ordering equal distances its way).
    pub fn search(&self, vector: &[f32], k: usize, ef: usize) -> Vec<(u32, f32)> {
        let Some(entry) = self.entry else {
            return Vec::new();
        };
        if k == 0 || self.tombstones == self.slots() {
            return Vec::new();
        }
        let live = self.slots() - self.tombstones;
        let ef = ef.max(k).min(live);
        let q = self.query(vector);
        let mut nearest = vec![Near {
            dist: self.distance(&q, entry),
            slot: entry,
        }];
        // A nonexistent slot: nothing to skip.
        let none = u32::MAX;
        let mut found = Vec::with_capacity(ef);
        for l in (1..=usize::from(self.levels[entry as usize])).rev() {
            // Greedy descent walks through deleted nodes too: start from the
            // best seen, deleted or not.
            self.search_layer(&q, &nearest, 1, l, none, &mut found);
            if !found.is_empty() {
                std::mem::swap(&mut nearest, &mut found);
            }
        }
        self.search_layer(&q, &nearest, ef, 0, none, &mut found);
        found.into_iter().map(|n| (n.slot, n.dist)).collect()
    }

    /// Marks `slot` deleted. Its vector stays for navigation until `compact`.
    pub fn delete(&mut self, slot: u32) {
        let flag = self.dim + 1;
        if std::mem::replace(&mut self.node_mut(slot)[flag], 1) == 0 {
            self.tombstones += 1;
        }
    }

    /// Drops every deleted node: each live node that linked to one is
    /// reconnected (its live links plus the deleted nodes' live links, pruned
    /// by the heuristic), a new entry is chosen if the old one is gone, and
    /// the live slots are renumbered in order. Returns the new slot of each
    /// old one (`u32::MAX` for a dropped one).
    pub fn compact(&mut self) -> Vec<u32> {
        let slots = self.slots();
        if self.tombstones == 0 {
            return (0..slots as u32).collect();
        }
        for slot in 0..slots as u32 {
            if self.is_deleted(slot) {
                continue;
            }
            for level in 0..=usize::from(self.levels[slot as usize]) {
                let links = self.links(slot, level);
                if links.iter().all(|&l| !self.is_deleted(l)) {
                    continue;
                }
                // The live links, and the live nodes reachable through
                // deleted ones (a run of deletes along a path is bridged).
                let mut pool: Vec<u32> = Vec::new();
                let mut through: Vec<u32> = Vec::new();
                for &l in links {
                    if self.is_deleted(l) {
                        through.push(l);
                    } else {
                        pool.push(l);
                    }
                }
                let mut seen = through.clone();
                while let Some(d) = through.pop() {
                    for &n in self.links(d, level) {
                        if n == slot || seen.contains(&n) {
                            continue;
                        }
                        if !self.is_deleted(n) {
                            pool.push(n);
                        } else if seen.len() < 64 {
                            seen.push(n);
                            through.push(n);
                        }
                    }
                }
                pool.sort_unstable();
                pool.dedup();
                let mut candidates: Vec<Near> = pool
                    .into_iter()
                    .map(|s| Near {
                        dist: self.between(slot, s),
                        slot: s,
                    })
                    .collect();
                candidates.sort_unstable();
                let cap = if level == 0 { self.m0() } else { self.shape.m };
                let mut kept = Vec::with_capacity(cap);
                self.select(&candidates, cap, &mut kept);
                self.set_links(slot, level, &kept);
                // And back: a bridge one way only leaves the other side
                // unreachable from here.
                for &other in &kept {
                    self.link(other, slot, level);
                }
            }
        }

        let mut renumber = vec![u32::MAX; slots];
        let mut next = 0u32;
        for (slot, new) in renumber.iter_mut().enumerate() {
            if !self.is_deleted(slot as u32) {
                *new = next;
                next += 1;
            }
        }
        let entry = (0..slots)
            .filter(|&s| !self.is_deleted(s as u32))
            .max_by(|&a, &b| self.levels[a].cmp(&self.levels[b]).then(b.cmp(&a)));
        let mut out = Graph::new(self.shape);
        (out.dim, out.stride) = (self.dim, self.stride);
        let (m0, m) = (self.m0(), self.shape.m);
        let mut block = Vec::with_capacity(self.stride);
        for slot in 0..slots {
            if self.is_deleted(slot as u32) {
                continue;
            }
            // The vector and its inverse norm as they are; live.
            block.clear();
            block.extend_from_slice(&self.node(slot as u32)[..=self.dim]);
            block.push(0);
            out.levels.push(self.levels[slot]);
            let remap = |links: &[u32], cap: usize, into: &mut Vec<u32>| {
                let kept: Vec<u32> = links
                    .iter()
                    .map(|&l| renumber[l as usize])
                    .filter(|&l| l != u32::MAX)
                    .collect();
                into.push(kept.len() as u32);
                into.extend_from_slice(&kept);
                into.extend(std::iter::repeat_n(0, cap - kept.len()));
            };
            remap(self.links(slot as u32, 0), m0, &mut block);
            out.push_block(&block);
            let mut upper = Vec::with_capacity(self.upper[slot].len());
            for level in 1..=usize::from(self.levels[slot]) {
                remap(self.links(slot as u32, level), m, &mut upper);
            }
            out.upper.push(upper);
        }
        out.entry = entry.map(|s| renumber[s]);
        *self = out;
        renumber
    }

    /// Every part, for the snapshot (which is written compacted): the
    /// vectors and level-0 links per slot through [`Graph::vector`] and
    /// [`Graph::links0_block`].
    pub fn parts(&self) -> Parts<'_> {
        assert_eq!(self.tombstones, 0, "a snapshot is written compacted");
        Parts {
            dim: self.dim,
            entry: self.entry,
            levels: &self.levels,
            upper: &self.upper,
        }
    }

    /// Reads a graph of `levels.len()` nodes from a snapshot (version 2), in
    /// its order: the node blocks as [`pages`](Self::pages) gives them, then
    /// each node's upper-level lists (`level x (1 + m)` words). `read` fills
    /// a run of words from the file (little-endian decoded): a whole page of
    /// blocks at a time, straight into the page (each page as long as its
    /// nodes: the caller has checked that the file holds them). Every vector
    /// must be finite, every link is checked (see [`read_upper`]), every
    /// tombstone flag must be clear (a snapshot is compacted), and the
    /// inverse norms are computed again, not taken from the file.
    ///
    /// # Errors
    ///
    /// `read`'s, or what is inconsistent (a dimension out of range, a
    /// non-finite value, a link past the end or to a node without the
    /// link's level, a level too high, an entry point that is not a top
    /// node, a deleted node).
    ///
    /// [`read_upper`]: Self::read_upper
    pub fn read(
        shape: Shape,
        dim: usize,
        entry: Option<u32>,
        levels: Vec<u8>,
        read: &mut dyn FnMut(&mut [u32]) -> Result<(), String>,
    ) -> Result<Self, String> {
        let mut graph = Graph::empty_for(shape, dim, entry, &levels)?;
        let (n, stride, m0) = (levels.len(), graph.stride, 2 * shape.m);
        for first in (0..n).step_by(PAGE) {
            let mut page = vec![0; (n - first).min(PAGE) * stride];
            read(&mut page)?;
            for (i, block) in page.chunks_exact_mut(stride).enumerate() {
                let slot = first + i;
                if block[dim + 1] != 0 {
                    return Err(format!("node {slot} is marked deleted"));
                }
                check_links(slot, 0, &block[dim + 2..], m0, n)?;
                block[dim] = loaded_inverse_norm(shape.metric, slot, &block[..dim])?.to_bits();
            }
            graph.pages.push(page);
        }
        graph.read_upper(levels, read)?;
        graph.entry = entry;
        Ok(graph)
    }

    /// A graph with no nodes yet for a snapshot's `dim`, `entry` and
    /// `levels`, which are checked.
    fn empty_for(
        shape: Shape,
        dim: usize,
        entry: Option<u32>,
        levels: &[u8],
    ) -> Result<Self, String> {
        let n = levels.len();
        if dim > MAX_DIM || (n > 0 && dim == 0) {
            return Err(format!("dimension {dim} is not between 1 and {MAX_DIM}"));
        }
        if entry.is_some_and(|e| e as usize >= n) || entry.is_none() != (n == 0) {
            return Err("entry point out of range".into());
        }
        if let Some(e) = entry
            && levels.iter().any(|&l| l > levels[e as usize])
        {
            return Err("the entry point is not on the top level".into());
        }
        if let Some(slot) = levels.iter().position(|&l| l > MAX_LEVEL) {
            return Err(format!("node {slot}: bad level {}", levels[slot]));
        }
        let mut graph = Graph::new(shape);
        graph.dim = dim;
        graph.stride = if dim == 0 { 0 } else { dim + 3 + 2 * shape.m };
        graph.pages.reserve(n.div_ceil(PAGE));
        Ok(graph)
    }

    /// Reads every node's upper-level lists, checked, and takes `levels`.
    /// A link on level `L` must be to a node that has level `L` (a search
    /// on `L` reads that node's list for `L`): one comparison a link, on
    /// about one node in `m`.
    fn read_upper(
        &mut self,
        levels: Vec<u8>,
        read: &mut dyn FnMut(&mut [u32]) -> Result<(), String>,
    ) -> Result<(), String> {
        let (n, m) = (levels.len(), self.shape.m);
        self.upper.reserve_exact(n);
        for (slot, &level) in levels.iter().enumerate() {
            let mut upper = vec![0; usize::from(level) * (m + 1)];
            read(&mut upper)?;
            for (below, chunk) in upper.chunks_exact(m + 1).enumerate() {
                let level = below + 1;
                let links = check_links(slot, level, chunk, m, n)?;
                if let Some(&to) = links
                    .iter()
                    .find(|&&to| usize::from(levels[to as usize]) < level)
                {
                    return Err(format!(
                        "node {slot} links at level {level} to node {to}, whose level is {}",
                        levels[to as usize]
                    ));
                }
            }
            self.upper.push(upper);
        }
        self.levels = levels;
        Ok(())
    }

    /// The filled part of every page of node blocks, in slot order: what a
    /// snapshot (version 2) holds, and [`read`](Self::read) reads back.
    pub fn pages(&self) -> impl Iterator<Item = &[u32]> {
        self.pages.iter().map(Vec::as_slice)
    }

    /// Reads a graph of `levels.len()` nodes from a version-1 snapshot, in
    /// its order: every vector (`dim` words), then every level-0 list
    /// (count, then `2m` places), then each node's upper-level lists (`level
    /// x (1 + m)` words). `read` fills a run of words from the file
    /// (little-endian decoded); vectors and level-0 lists go into their node
    /// blocks (pages as long as their nodes, as [`read`](Self::read)), and
    /// every vector and link is checked as there.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read).
    pub fn read_v1(
        shape: Shape,
        dim: usize,
        entry: Option<u32>,
        levels: Vec<u8>,
        read: &mut dyn FnMut(&mut [u32]) -> Result<(), String>,
    ) -> Result<Self, String> {
        let mut graph = Graph::empty_for(shape, dim, entry, &levels)?;
        let (n, stride, m0) = (levels.len(), graph.stride, 2 * shape.m);
        for first in (0..n).step_by(PAGE) {
            graph.pages.push(vec![0; (n - first).min(PAGE) * stride]);
        }
        for slot in 0..n {
            let block = graph.node_mut(slot as u32);
            read(&mut block[..dim])?;
            block[dim] = loaded_inverse_norm(shape.metric, slot, &block[..dim])?.to_bits();
        }
        for slot in 0..n {
            let links = &mut graph.node_mut(slot as u32)[dim + 2..];
            read(links)?;
            check_links(slot, 0, links, m0, n)?;
        }
        graph.read_upper(levels, read)?;
        graph.entry = entry;
        Ok(graph)
    }

    /// Bytes held per node (vectors, links, bookkeeping), for `/status`-like
    /// reporting and the benchmark.
    pub fn heap_bytes(&self) -> usize {
        self.pages
            .iter()
            .map(|p| 24 + p.capacity() * 4)
            .sum::<usize>()
            + self.levels.capacity()
            + self
                .upper
                .iter()
                .map(|u| 24 + u.capacity() * 4)
                .sum::<usize>()
            + self.scratch.borrow().visited.stamps.capacity() * 4
    }
}

/// `slot`'s link list on `level` as stored (count, then `cap` places) is at
/// most `cap` long and links only to slots below `n`: its links.
fn check_links(
    slot: usize,
    level: usize,
    list: &[u32],
    cap: usize,
    n: usize,
) -> Result<&[u32], String> {
    let count = list[0] as usize;
    if count > cap {
        return Err(format!(
            "node {slot} has {count} links at level {level}, at most {cap} fit"
        ));
    }
    let links = &list[1..=count];
    if let Some(&to) = links.iter().find(|&&to| to as usize >= n) {
        return Err(format!(
            "node {slot} links at level {level} to node {to}, past the end ({n} nodes)"
        ));
    }
    Ok(links)
}

/// What a loaded node's block keeps after its vector (`1 / |vector|` for
/// cosine, else 0), once the vector (as the bits of its floats) is known to
/// be finite. Its squared norm (cosine's anyway) is finite only when every
/// value is (NaN and infinities carry through a sum of squares): one SIMD
/// pass, where the exact scan of [`check_finite`] costs more (measured:
/// docs/hnsw.md), run only when the square is not finite (a NaN, an
/// infinity, or finite values too large to square).
fn loaded_inverse_norm(metric: Metric, slot: usize, bits: &[u32]) -> Result<f32, String> {
    let squared = {
        let v = as_f32s(bits);
        dot(v, v)
    };
    if !squared.is_finite() {
        check_finite(slot, bits)?;
    }
    // As `inverse_norm`: 0 for a zero vector or an overflowing square.
    Ok(match metric {
        Metric::Cosine if squared.is_finite() && squared > 0.0 => 1.0 / squared.sqrt(),
        _ => 0.0,
    })
}

/// `slot`'s vector (as the bits of its floats) holds no NaN or infinity: a
/// NaN distance compares as the nearest of all. One pass of a maximum over
/// the magnitudes' bits, which vectorises; a float is finite when its
/// exponent is not all ones.
fn check_finite(slot: usize, bits: &[u32]) -> Result<(), String> {
    let largest = bits.iter().fold(0, |max, &b| max.max(b & 0x7fff_ffff));
    if largest >= 0x7f80_0000 {
        return Err(format!("node {slot} has a non-finite value"));
    }
    Ok(())
}

/// A graph's parts, borrowed for encoding.
pub struct Parts<'a> {
    pub dim: usize,
    pub entry: Option<u32>,
    pub levels: &'a [u8],
    pub upper: &'a [Vec<u32>],
}

/// The level of a new node, drawn from its id: `floor(-ln(u) / ln(m))` with
/// `u` uniform in (0, 1] from a hash of the id. The same id gets the same level
/// in every shard and every rebuild, so re-sharding and restarts rebuild the
/// same kind of graph, and no random state needs saving.
pub fn level_for(id: &str, m: usize) -> u8 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64 finaliser: FNV's low bits alone are poorly mixed.
    h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let level = -u.ln() / (m.max(2) as f64).ln();
    level.min(f64::from(MAX_LEVEL)) as u8
}

/// Distances by slot, for the tests' exact search.
#[cfg(test)]
pub fn exact(graph: &Graph, vector: &[f32], k: usize) -> Vec<u32> {
    let q = graph.query(vector);
    let mut all: Vec<Near> = (0..graph.slots() as u32)
        .filter(|&s| !graph.is_deleted(s))
        .map(|s| Near {
            dist: graph.distance(&q, s),
            slot: s,
        })
        .collect();
    all.sort_unstable();
    all.truncate(k);
    all.into_iter().map(|n| n.slot).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clustered points: `n` vectors around 20 centres, deterministic.
    fn points(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 20_000) as f32 / 10_000.0 - 1.0
        };
        let centres: Vec<Vec<f32>> = (0..20)
            .map(|_| (0..dim).map(|_| next()).collect())
            .collect();
        (0..n)
            .map(|i| centres[i % 20].iter().map(|c| c + 0.3 * next()).collect())
            .collect()
    }

    fn build(metric: Metric, data: &[Vec<f32>]) -> Graph {
        let mut g = Graph::new(Shape {
            metric,
            m: 12,
            ef_construction: 100,
        });
        for (i, v) in data.iter().enumerate() {
            g.insert(v, level_for(&format!("p{i}"), 12));
        }
        g
    }

    fn recall(g: &Graph, queries: &[Vec<f32>], k: usize, ef: usize) -> f64 {
        let mut hit = 0;
        for q in queries {
            let truth = exact(g, q, k);
            let got: Vec<u32> = g
                .search(q, k, ef)
                .into_iter()
                .take(k)
                .map(|(s, _)| s)
                .collect();
            hit += got.iter().filter(|s| truth.contains(s)).count();
        }
        hit as f64 / (queries.len() * k) as f64
    }

    #[test]
    fn recall_is_high_for_every_metric() {
        // Queries from the same clusters as the data, as real queries are.
        let mut data = points(3050, 24, 7);
        let queries = data.split_off(3000);
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            // `dot` is for normalised embeddings (docs/hnsw.md): maximum inner
            // product search over vectors of any length is a harder problem
            // (recall 0.70 on these points unnormalised).
            let normalised = |v: &Vec<Vec<f32>>| -> Vec<Vec<f32>> {
                v.iter()
                    .map(|x| x.iter().map(|a| a * inverse_norm(x)).collect())
                    .collect()
            };
            let (data, queries) = match metric {
                Metric::Dot => (normalised(&data), normalised(&queries)),
                _ => (data.clone(), queries.clone()),
            };
            let g = build(metric, &data);
            let r = recall(&g, &queries, 10, 64);
            assert!(r >= 0.95, "{metric:?}: recall@10 {r}");
            // The best match of a stored point is itself.
            if metric != Metric::Dot {
                assert_eq!(g.search(&data[17], 1, 64)[0].0, 17);
            }
        }
    }

    #[test]
    fn deleted_nodes_are_never_returned_and_compaction_keeps_recall() {
        let mut data = points(2040, 16, 3);
        let queries = data.split_off(2000);
        let mut g = build(Metric::L2, &data);
        for slot in (0..2000).step_by(3) {
            g.delete(slot);
        }
        for q in &queries {
            assert!(g.search(q, 10, 50).iter().all(|&(s, _)| s % 3 != 0));
            assert!(g.search(q, 10, 50).len() >= 10);
        }
        let before = recall(&g, &queries, 10, 50);
        let renumber = g.compact();
        assert_eq!(g.slots(), 2000 - 667);
        assert_eq!(g.tombstones(), 0);
        assert_eq!(renumber[1], 0);
        assert_eq!(renumber[3], u32::MAX);
        assert_eq!(g.vector(renumber[5]), &data[5][..]);
        let after = recall(&g, &queries, 10, 50);
        assert!(
            after >= 0.95 && after >= before - 0.02,
            "before {before}, after {after}"
        );

        // Everything deleted: empty answers, and compaction leaves an empty graph.
        for s in 0..g.slots() as u32 {
            g.delete(s);
        }
        assert!(g.search(&queries[0], 5, 50).is_empty());
        g.compact();
        assert_eq!((g.slots(), g.entry()), (0, None));
    }

    #[test]
    fn read_round_trip_and_damage_is_refused() {
        let data = points(2100, 8, 11);
        let g = build(Metric::Cosine, &data);
        let p = g.parts();
        let read_from = |words: Vec<u32>, v1: bool| {
            let mut at = 0;
            let mut read = |out: &mut [u32]| {
                let next = words.get(at..at + out.len()).ok_or("truncated")?;
                out.copy_from_slice(next);
                at += out.len();
                Ok(())
            };
            let levels = p.levels.to_vec();
            if v1 {
                Graph::read_v1(g.shape(), p.dim, p.entry, levels, &mut read)
            } else {
                Graph::read(g.shape(), p.dim, p.entry, levels, &mut read)
            }
        };
        // Version 2's order: the pages, then the upper lists.
        let mut words: Vec<u32> = g.pages().flatten().copied().collect();
        words.extend(p.upper.iter().flatten());
        // Version 1's: vectors, level-0 lists, upper lists.
        let slots = 0..g.slots() as u32;
        let mut v1: Vec<u32> = slots
            .clone()
            .flat_map(|s| g.vector_bits(s).to_vec())
            .collect();
        v1.extend(slots.flat_map(|s| g.links0_block(s).to_vec()));
        v1.extend(p.upper.iter().flatten());
        for (words, v1) in [(words.clone(), false), (v1, true)] {
            let back = read_from(words, v1).unwrap();
            assert_eq!(back.search(&data[4], 5, 40), g.search(&data[4], 5, 40));
            assert_eq!(back.search(&data[4], 5, 40)[0].0, 4);
        }

        // The first node's first level-0 link, past the end.
        let stride = 8 + 3 + 24;
        let mut damaged = words.clone();
        damaged[8 + 3] = 100_000;
        let err = read_from(damaged, false).unwrap_err();
        assert!(err.contains("past the end"), "{err}");
        let mut deleted = words.clone();
        deleted[stride + 8 + 1] = 1;
        let err = read_from(deleted, false).unwrap_err();
        assert!(err.contains("deleted"), "{err}");
        let err = read_from(words[..words.len() - 1].to_vec(), false).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn levels_are_geometric_and_stable() {
        let levels: Vec<u8> = (0..100_000)
            .map(|i| level_for(&format!("d{i}"), 16))
            .collect();
        let above0 = levels.iter().filter(|&&l| l > 0).count();
        // P(level > 0) = 1/m.
        assert!((5_500..7_000).contains(&above0), "{above0}");
        assert_eq!(level_for("d1", 16), levels[1]);
        assert!(levels.iter().all(|&l| l <= MAX_LEVEL));
    }
}
