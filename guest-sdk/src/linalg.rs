//! The host's matrix product: `jina:linalg/linalg@0.1.0`
//! (`wit/linalg/linalg.wit`, docs/wit-contract.md).
//!
//! A jina-wasm host computes [`matmul`] natively (sgemm with AVX2/FMA where
//! the CPU has them), several times faster than the same product in wasm
//! simd128 (docs/minilm.md says why). A component imports the interface only
//! if it calls [`matmul`]; one that never does is built exactly as before.
//!
//! Outside a component (a native build of an executor crate, for its unit
//! tests or a benchmark), there is no host: [`matmul`] returns an error.

/// The most bytes of each operand and of the result of one call (16,777,216 f32).
pub const MAX_BYTES: u64 = 64 << 20;
/// The most multiply-adds (`m * k * n`) of one call.
pub const MAX_MULTIPLY_ADDS: u64 = 1 << 31;

/// `c = a · b` in f32, row-major: `a` is `m × k`; `b` is `k × n`, or `n × k`
/// used as its transpose when `b_transposed` (a PyTorch `Linear`'s weight:
/// `x · wᵀ` is `matmul(rows, inputs, outputs, x, w, true)`). Returns `c`, `m × n`.
///
/// Stay within [`MAX_BYTES`] per operand and result and [`MAX_MULTIPLY_ADDS`]
/// per call: split the rows of `a` into blocks.
///
/// # Errors
///
/// The host's message, naming the argument: a zero dimension, a list whose
/// length is not `m * k` or `k * n`, a limit passed, or the call's host memory
/// over the executor's memory limit. In a native build, always.
pub fn matmul(
    m: u32,
    k: u32,
    n: u32,
    a: &[f32],
    b: &[f32],
    b_transposed: bool,
) -> Result<Vec<f32>, String> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::__linalg_bindings::jina::linalg::linalg::matmul(m, k, n, a, b, b_transposed)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (m, k, n, a, b, b_transposed);
        Err(
            "jina:linalg matmul: the host's linear algebra exists only inside a jina-wasm \
             component (this is a native build)"
                .into(),
        )
    }
}
