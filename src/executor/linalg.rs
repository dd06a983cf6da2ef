//! `jina:linalg/linalg@0.1.0` (`wit/linalg/linalg.wit`): a matrix product the
//! host computes natively for a guest, with `matrixmultiply`'s sgemm on the
//! calling thread (AVX2/FMA where the CPU has them), for executors whose time
//! goes to dense layers (the MiniLM encoder, docs/minilm.md).
//!
//! Every executor gets it (it is in the shared linker); a component imports it
//! only if it calls it, so no other component changes.
//!
//! The caller is hostile until checked. Before the host copies or allocates
//! anything, [`check`] refuses: a zero dimension, lists whose lengths are not
//! `m * k` and `k * n`, an operand or result over [`MAX_BYTES`], and more than
//! [`MAX_MULTIPLY_ADDS`] (host code cannot be interrupted by the epoch
//! deadline; the guest's next loop header can, so this bounds the overrun),
//! and [`charge`] refuses a call whose host memory would take the instance
//! past its memory limit. Products are computed in `u128`: nothing overflows.
//!
//! Memory: wasmtime 48 gives the host no in-place view of a `list<f32>`
//! (`WasmList::as_le_slice` exists for integer lists only), so the operands
//! are copied out of the guest's memory once the checks pass. A call holds, for
//! its duration only, its copies of `a` and `b`, the result and sgemm's packing
//! buffers: at most 3 × 64 MiB + [`PACKING_BYTES`]. That is charged: against
//! the instance's `--memory-hwm` beside its linear memory, and reserved from its
//! tenant's budget for the call. No state outlives a call. The result is then
//! copied into the guest's memory, which grows (and is charged) as usual.

use wasmtime::AsContextMut;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, WasmList};

use super::state::ExecutorState;

/// The interface's name, as components import it.
pub const INTERFACE: &str = "jina:linalg/linalg@0.1.0";
/// The most bytes of each operand and of the result of one call (16,777,216 f32).
pub const MAX_BYTES: u64 = 64 << 20;
/// The most multiply-adds (`m * k * n`) of one call: well under a second of
/// one core with AVX2/FMA (tens of GFLOP/s; not timed separately).
pub const MAX_MULTIPLY_ADDS: u64 = 1 << 31;
/// An upper bound of the packing buffers `matrixmultiply`'s sgemm allocates
/// for one call (its blocks are at most 64 × 256 of `a` and 256 × 1024 of `b`
/// in f32, ~1.1 MiB).
pub const PACKING_BYTES: u64 = 2 << 20;

/// A call's checked dimensions and the host memory it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shape {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// Bytes the host holds during the call: copies of `a`, `b`, the result,
    /// the packing buffers.
    pub host_bytes: u64,
}

/// Checks a call's dimensions against its lists' lengths and the limits.
pub(super) fn check(m: u32, k: u32, n: u32, a_len: usize, b_len: usize) -> Result<Shape, String> {
    for (name, value) in [("m", m), ("k", k), ("n", n)] {
        if value == 0 {
            return Err(format!(
                "jina:linalg matmul: {name} = 0: every dimension must be at least 1"
            ));
        }
    }
    let (m128, k128, n128) = (u128::from(m), u128::from(k), u128::from(n));
    let (mk, kn, mn) = (m128 * k128, k128 * n128, m128 * n128);
    if a_len as u128 != mk {
        return Err(format!(
            "jina:linalg matmul: a holds {a_len} values, but m × k = {m} × {k} = {mk}"
        ));
    }
    if b_len as u128 != kn {
        return Err(format!(
            "jina:linalg matmul: b holds {b_len} values, but k × n = {k} × {n} = {kn}"
        ));
    }
    for (name, values) in [("a", mk), ("b", kn), ("the result (m × n)", mn)] {
        if values * 4 > u128::from(MAX_BYTES) {
            return Err(format!(
                "jina:linalg matmul: {name} is {} MiB, over the {} MiB one call takes \
                 (split the rows of a into blocks)",
                (values * 4) >> 20,
                MAX_BYTES >> 20
            ));
        }
    }
    let work = mk * n128;
    if work > u128::from(MAX_MULTIPLY_ADDS) {
        return Err(format!(
            "jina:linalg matmul: m × k × n = {m} × {k} × {n} = {work} multiply-adds, over the \
             {MAX_MULTIPLY_ADDS} one call may take (split the rows of a into blocks of at most {} rows)",
            (u128::from(MAX_MULTIPLY_ADDS) / kn).max(1)
        ));
    }
    // Each of the three is at most MAX_BYTES, so this fits comfortably.
    let host_bytes = ((mk + kn + mn) * 4) as u64 + PACKING_BYTES;
    Ok(Shape {
        m: m as usize,
        k: k as usize,
        n: n as usize,
        host_bytes,
    })
}

/// Refuses a call whose host memory, beside the instance's linear memory,
/// would pass the instance's memory limit.
pub(super) fn charge(
    linear_memory: usize,
    memory_limit: usize,
    host_bytes: u64,
) -> Result<(), String> {
    let total = (linear_memory as u128) + u128::from(host_bytes);
    if total > memory_limit as u128 {
        return Err(format!(
            "jina:linalg matmul: the call needs {} MiB of host memory beside the instance's {} MiB \
             of linear memory: over its memory limit of {} MiB (--memory-hwm)",
            host_bytes.div_ceil(1 << 20),
            linear_memory >> 20,
            memory_limit >> 20
        ));
    }
    Ok(())
}

/// `c = a · b` (or `a · bᵀ`), row-major, for a checked `shape`.
pub(super) fn matmul(shape: Shape, a: &[f32], b: &[f32], b_transposed: bool) -> Vec<f32> {
    let Shape { m, k, n, .. } = shape;
    assert!(a.len() == m * k && b.len() == k * n && m > 0 && k > 0 && n > 0);
    let mut c = vec![0f32; m * n];
    // b as a k × n matrix: element (p, j) at p * n + j, or at j * k + p when
    // it is given transposed (n × k).
    let (rsb, csb) = if b_transposed { (1, k) } else { (n, 1) };
    // SAFETY: the lengths are checked above, so every element the strides
    // address (a: m × k at (k, 1); b: k × n at (rsb, csb); c: m × n at (n, 1))
    // is inside its slice, and `c` does not alias `a` or `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    c
}

/// Copies a checked list out of the guest's memory.
fn read(
    store: &mut StoreContextMut<'_, ExecutorState>,
    list: &WasmList<f32>,
    name: &str,
) -> Result<Vec<f32>, String> {
    let mut values = Vec::new();
    values
        .try_reserve_exact(list.len())
        .map_err(|e| format!("jina:linalg matmul: cannot hold {name}: {e}"))?;
    let items = list
        .iter(store.as_context_mut())
        .map_err(|e| format!("jina:linalg matmul: cannot read {name}: {e}"))?;
    for item in items {
        values.push(item.map_err(|e| format!("jina:linalg matmul: cannot read {name}: {e}"))?);
    }
    Ok(values)
}

/// One `matmul` call from a guest: checked, charged, computed.
fn call(
    mut store: StoreContextMut<'_, ExecutorState>,
    (m, k, n, a, b, b_transposed): (u32, u32, u32, WasmList<f32>, WasmList<f32>, bool),
) -> Result<Vec<f32>, String> {
    let shape = check(m, k, n, a.len(), b.len())?;
    let limiter = &store.data().limiter;
    charge(limiter.memory, limiter.memory_limit, shape.host_bytes)?;
    let tenant = limiter.tenant.clone();
    if let Some(tenant) = &tenant
        && !tenant.reserve(shape.host_bytes)
    {
        return Err(format!(
            "jina:linalg matmul: the call needs {} MiB of host memory: over tenant {}'s memory budget",
            shape.host_bytes.div_ceil(1 << 20),
            tenant.name()
        ));
    }
    let result = read(&mut store, &a, "a").and_then(|a_values| {
        let b_values = read(&mut store, &b, "b")?;
        Ok(matmul(shape, &a_values, &b_values, b_transposed))
    });
    if let Some(tenant) = &tenant {
        tenant.release(shape.host_bytes);
    }
    result
}

/// Adds `jina:linalg/linalg@0.1.0` to the linker every executor is linked with.
pub(super) fn add_to_linker(linker: &mut Linker<ExecutorState>) -> wasmtime::Result<()> {
    let mut linalg = linker.instance(INTERFACE)?;
    linalg.func_wrap("matmul", |store, params| Ok((call(store, params),)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matmul_matches_a_naive_loop() {
        for (m, k, n) in [(1, 1, 1), (7, 13, 5), (33, 70, 19), (64, 384, 40)] {
            let a = values(m * k, 1);
            for b_transposed in [false, true] {
                let b = values(k * n, 2);
                let shape = check(m as u32, k as u32, n as u32, a.len(), b.len()).unwrap();
                let c = matmul(shape, &a, &b, b_transposed);
                assert_eq!(c.len(), m * n);
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k)
                            .map(|p| {
                                let bv = if b_transposed {
                                    b[j * k + p]
                                } else {
                                    b[p * n + j]
                                };
                                f64::from(a[i * k + p]) * f64::from(bv)
                            })
                            .sum();
                        let got = f64::from(c[i * n + j]);
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "({m}, {k}, {n}) transposed {b_transposed}: c[{i}, {j}] = {got}, naive {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn lengths_that_do_not_match_the_dimensions_are_refused() {
        let e = check(2, 3, 4, 5, 12).unwrap_err();
        assert!(e.contains("a holds 5 values, but m × k = 2 × 3 = 6"), "{e}");
        let e = check(2, 3, 4, 6, 13).unwrap_err();
        assert!(
            e.contains("b holds 13 values, but k × n = 3 × 4 = 12"),
            "{e}"
        );
        // A list far shorter than huge dimensions claim (and no overflow).
        let e = check(u32::MAX, u32::MAX, u32::MAX, 10, 10).unwrap_err();
        assert!(
            e.contains("a holds 10 values, but m × k = 4294967295 × 4294967295"),
            "{e}"
        );
    }

    #[test]
    fn zero_dimensions_are_refused() {
        for (m, k, n, name) in [(0, 3, 4, "m"), (2, 0, 4, "k"), (2, 3, 0, "n")] {
            let e = check(m, k, n, (m * k) as usize, (k * n) as usize).unwrap_err();
            assert!(e.contains(&format!("{name} = 0")), "{e}");
        }
    }

    #[test]
    fn operands_results_and_work_over_the_caps_are_refused() {
        let max_values = (MAX_BYTES / 4) as usize;
        // a over 64 MiB.
        let e = check(1, max_values as u32 + 1, 1, max_values + 1, max_values + 1).unwrap_err();
        assert!(e.contains("a is 64 MiB, over the 64 MiB"), "{e}");
        // The result over 64 MiB while both operands are small.
        let e = check(8192, 1, 4096, 8192, 4096).unwrap_err();
        assert!(e.contains("the result (m × n) is 128 MiB"), "{e}");
        // Every operand at the cap, but 2^36 multiply-adds.
        let e = check(4096, 4096, 4096, max_values, max_values).unwrap_err();
        assert!(
            e.contains("68719476736 multiply-adds, over the 2147483648"),
            "{e}"
        );
        assert!(e.contains("blocks of at most 128 rows"), "{e}");
        // The largest dimensions with matching (claimed) lengths: no overflow, a refusal.
        let huge = (u32::MAX as usize) * (u32::MAX as usize);
        let e = check(u32::MAX, u32::MAX, u32::MAX, huge, huge).unwrap_err();
        assert!(e.contains("a is "), "{e}");
        // At the work cap exactly: accepted, with the host memory it holds.
        let shape = check(1 << 11, 1 << 10, 1 << 10, 1 << 21, 1 << 20).unwrap();
        assert_eq!(
            shape.host_bytes,
            ((1u64 << 21) + (1 << 20) + (1 << 21)) * 4 + PACKING_BYTES
        );
    }

    #[test]
    fn host_memory_is_charged_against_the_memory_limit() {
        assert!(charge(100 << 20, 1 << 30, 200 << 20).is_ok());
        let e = charge(900 << 20, 1 << 30, 200 << 20).unwrap_err();
        assert!(
            e.contains("needs 200 MiB of host memory beside the instance's 900 MiB")
                && e.contains("memory limit of 1024 MiB (--memory-hwm)"),
            "{e}"
        );
    }
}
