//! Vector helpers and [`feature_hash`], a deterministic text embedding.
//!
//! Pure Rust with no WASI calls: host benchmarks use these natively too.

/// The dot product over the common prefix of `a` and `b`.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    // Eight independent sums: float addition is not associative, so the
    // compiler will not split one running sum into lanes for us.
    let mut acc = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (a8.remainder(), b8.remainder());
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// The Euclidean length of `v`.
pub fn norm(v: &[f32]) -> f32 {
    dot(v, v).sqrt()
}

/// Cosine similarity in `[-1, 1]`; 0 when either vector is all zeros.
/// Over the common prefix when lengths differ.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let denominator = norm(&a[..n]) * norm(&b[..n]);
    if denominator == 0.0 {
        0.0
    } else {
        dot(a, b) / denominator
    }
}

/// Scale `v` to unit length; an all-zero (or non-finite) vector is left as is.
///
/// The norm is `sqrt` of the sum of squares accumulated in `f64`, and each
/// component becomes `(x as f64 / norm) as f32` (round to nearest).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return;
    }
    for x in v {
        *x = (f64::from(*x) / norm) as f32;
    }
}

/// Embed `text` in `dim` dimensions by feature hashing. Deterministic, no model.
///
/// This is a contract: ports (Python, JS) must produce the same bits. Exactly:
///
/// 1. `dim == 0` gives an empty vector.
/// 2. Lowercase the whole text with Unicode full default case conversion
///    (Rust `str::to_lowercase`, Python `str.lower`, JS `toLowerCase`).
/// 3. Split it into *words*: maximal runs of word characters. Every character is
///    a word character except ASCII characters that are not `[0-9A-Za-z]`
///    (spaces, punctuation, controls) and the non-ASCII Unicode `White_Space`
///    characters U+0085, U+00A0, U+1680, U+2000–U+200A, U+2028, U+2029,
///    U+202F, U+205F, U+3000.
/// 4. Features, each a string (duplicates count again):
///    - every word `w`: `"w:" + w`;
///    - every pair of consecutive words `a`, `b`: `"b:" + a + " " + b`;
///    - every character 3-gram of every word wrapped in boundary markers
///      `"<" + w + ">"`, counted in Unicode scalar values (so a one-letter word
///      `a` gives the single 3-gram `<a>`): `"c:" + gram`.
/// 5. Hash each feature's UTF-8 bytes with 64-bit FNV-1a (offset basis
///    `0xcbf29ce484222325`, prime `0x100000001b3`, wrapping `u64` multiply).
///    Add `+1.0` to bucket `h % dim`, or `-1.0` when bit 63 of `h` is set.
///    The buckets are `f32`; the counts are small integers, so sums are exact
///    and order does not matter.
/// 6. [`l2_normalize`]: divide by the `f64` norm and round each component to
///    `f32`. A text without words stays all zeros.
pub fn feature_hash(text: &str, dim: usize) -> Vec<f32> {
    let mut v = vec![0f32; dim];
    if dim == 0 {
        return v;
    }
    let mut add = |hash: Fnv| {
        let h = hash.0;
        let sign = if h >> 63 == 1 { -1.0 } else { 1.0 };
        v[(h % dim as u64) as usize] += sign;
    };
    let lower = text.to_lowercase();
    let mut previous: Option<&str> = None;
    let mut gram = Vec::<char>::new();
    for word in lower
        .split(|c: char| !is_word_char(c))
        .filter(|w| !w.is_empty())
    {
        add(Fnv::new().write(b"w:").write(word.as_bytes()));
        if let Some(previous) = previous {
            add(Fnv::new()
                .write(b"b:")
                .write(previous.as_bytes())
                .write(b" ")
                .write(word.as_bytes()));
        }
        previous = Some(word);

        gram.clear();
        gram.push('<');
        gram.extend(word.chars());
        gram.push('>');
        for window in gram.windows(3) {
            let mut hash = Fnv::new().write(b"c:");
            for c in window {
                hash = hash.write(c.encode_utf8(&mut [0; 4]).as_bytes());
            }
            add(hash);
        }
    }
    l2_normalize(&mut v);
    v
}

fn is_word_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric();
    }
    !matches!(
        c,
        '\u{0085}' | '\u{00A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

/// 64-bit FNV-1a, streaming.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(mut self, bytes: &[u8]) -> Self {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fnv(s: &str) -> u64 {
        Fnv::new().write(s.as_bytes()).0
    }

    #[test]
    fn fnv1a_matches_reference_vectors() {
        assert_eq!(fnv(""), 0xcbf29ce484222325);
        assert_eq!(fnv("a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv("foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn feature_hash_by_hand() {
        // "Hi!" -> word "hi": features w:hi, c:<hi, c:hi> (no bigram).
        let dim = 16;
        let mut expected = vec![0f32; dim];
        for f in ["w:hi", "c:<hi", "c:hi>"] {
            let h = fnv(f);
            expected[(h % dim as u64) as usize] += if h >> 63 == 1 { -1.0 } else { 1.0 };
        }
        l2_normalize(&mut expected);
        assert_eq!(feature_hash("Hi!", dim), expected);
    }

    #[test]
    fn feature_hash_golden() {
        // Pinned output, also produced by an independent Python port: a port must
        // reproduce these bits exactly (NBSP separates, final sigma lowercases to ς).
        let v = feature_hash("Hello, World! Ünïcode\u{00A0}ok ΟΔΟΣ", 16);
        let bits: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
        assert_eq!(bits, GOLDEN, "{v:?}");
    }

    const GOLDEN: [u32; 16] = [
        0, 1044051130, 1044051130, 3191534778, 3191534778, 1057765260, 3199923386, 1044051130, 0,
        3191534778, 0, 1044051130, 1044051130, 1044051130, 1052439738, 1052439738,
    ];

    #[test]
    fn feature_hash_properties() {
        assert!(feature_hash("anything", 0).is_empty());
        assert_eq!(feature_hash("  ...  ", 32), vec![0.0; 32]);
        let a = feature_hash("The quick brown fox", 256);
        assert_eq!(a, feature_hash("the QUICK brown, fox.", 256));
        assert!((norm(&a) - 1.0).abs() < 1e-6);
        let b = feature_hash("the quick brown dog", 256);
        let c = feature_hash("completely unrelated words here", 256);
        assert!(cosine(&a, &b) > cosine(&a, &c));
    }

    #[test]
    fn vector_helpers() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let expected: f32 = a.iter().map(|x| x * x).sum();
        assert_eq!(dot(&a, &a), expected);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 1.0]), 0.0);
        assert!((cosine(&[1.0, 1.0], &[2.0, 2.0]) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut zero = vec![0.0; 3];
        l2_normalize(&mut zero);
        assert_eq!(zero, vec![0.0; 3]);
    }
}
