//! A plain WASI command (`wasi:cli/run`), not an executor: the host must reject
//! it with a clear "wrong world" error instead of failing at the first call.

fn main() {
    println!("hi");
}
