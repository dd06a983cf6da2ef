//! Fiber stacks for guest calls, kept for the next instance.
//!
//! A call runs on a fiber stack (calls are futures: `offload.rs`), and an
//! instance (its `Store`) keeps the stack it took until it is dropped. With
//! the on-demand allocator wasmtime maps a fresh stack for every instance and
//! unmaps it after: the mapping, the unmapping and the page faults of a stack
//! never touched made `instantiate + init` 15 µs slower (40 to 55 µs,
//! `make bench`). [`Stacks`] keeps up to [`KEEP`] stacks given back for the
//! next instances; a reused stack's touched pages are already there. (The
//! pooling allocator keeps its own stacks, the same way.)
//!
//! A reused stack holds what the last instance left on it, as the pooling
//! allocator's do by default (`Config::async_stack_zeroing` is off: compiled
//! wasm never reads a stack slot it did not write); when wasmtime asks for a
//! zeroed stack, the pages are dropped first and come back zero.

use std::ops::Range;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use wasmtime::{StackCreator, StackMemory};

/// Stacks kept for reuse, at most: a process that runs more instances at
/// once maps the others afresh.
const KEEP: usize = 16;

/// The stack creator of an on-demand engine (`Config::with_host_stack`).
#[derive(Default)]
pub(super) struct Stacks {
    free: Arc<Mutex<Vec<Mapping>>>,
}

// SAFETY: every stack is its own anonymous mapping: a guard page at the
// bottom (no access), then `size` bytes of zero-filled, page-aligned memory
// (or, reused, memory no other stack shares).
unsafe impl StackCreator for Stacks {
    fn new_stack(&self, size: usize, zeroed: bool) -> wasmtime::Result<Box<dyn StackMemory>> {
        let page = page_size();
        let len = size.next_multiple_of(page) + page;
        let reused = {
            let mut free = self.free.lock().expect("stacks lock");
            free.iter()
                .position(|m| m.len == len)
                .map(|at| free.swap_remove(at))
        };
        let mapping = match reused {
            Some(mapping) => {
                if zeroed {
                    mapping.zero(page)?;
                }
                mapping
            }
            None => Mapping::new(len, page)?,
        };
        Ok(Box::new(Stack {
            mapping: Some(mapping),
            page,
            free: self.free.clone(),
        }))
    }
}

/// One anonymous mapping: the guard page, then the stack.
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone; nothing else points
// into it while it is free, and a `Stack` lends it to one fiber at a time.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only reads its address and length.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(len: usize, page: usize) -> wasmtime::Result<Mapping> {
        // SAFETY: a new private anonymous mapping, touching no existing memory.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        let mapping = Mapping {
            base: NonNull::new(base.cast()).expect("mmap succeeded"),
            len,
        };
        // SAFETY: the range is inside the mapping just made; the first page
        // stays PROT_NONE, the guard.
        let stack = unsafe { mapping.base.as_ptr().add(page) };
        // SAFETY: as above.
        if unsafe { libc::mprotect(stack.cast(), len - page, libc::PROT_READ | libc::PROT_WRITE) }
            != 0
        {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(mapping)
    }

    /// Drops the stack's pages: they read as zero again.
    fn zero(&self, page: usize) -> wasmtime::Result<()> {
        // SAFETY: the stack part of this mapping, which no fiber uses now.
        let done = unsafe {
            libc::madvise(
                self.base.as_ptr().add(page).cast(),
                self.len - page,
                libc::MADV_DONTNEED,
            )
        };
        if done != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the whole mapping, made by `new` and used by nothing now.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// A stack lent to an instance; it goes back to the free list when dropped.
struct Stack {
    mapping: Option<Mapping>,
    page: usize,
    free: Arc<Mutex<Vec<Mapping>>>,
}

impl Stack {
    fn mapping(&self) -> &Mapping {
        self.mapping.as_ref().expect("held until dropped")
    }
}

// SAFETY: the ranges are those of the mapping this stack holds until dropped.
unsafe impl StackMemory for Stack {
    fn top(&self) -> *mut u8 {
        let m = self.mapping();
        // SAFETY: one past the end of the mapping.
        unsafe { m.base.as_ptr().add(m.len) }
    }

    fn range(&self) -> Range<usize> {
        let m = self.mapping();
        let base = m.base.as_ptr() as usize;
        base + self.page..base + m.len
    }

    fn guard_range(&self) -> Range<*mut u8> {
        let m = self.mapping();
        // SAFETY: the first page of the mapping.
        m.base.as_ptr()..unsafe { m.base.as_ptr().add(self.page) }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let Some(mapping) = self.mapping.take() else {
            return;
        };
        let mut free = self.free.lock().expect("stacks lock");
        if free.len() < KEEP {
            free.push(mapping);
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_given_back_is_reused_and_zeroed_when_asked() {
        let stacks = Stacks::default();
        let first = stacks.new_stack(64 << 10, false).unwrap();
        let top = first.top();
        let range = first.range();
        assert_eq!(range.end, top as usize);
        assert_eq!(first.guard_range().end as usize, range.start);
        // SAFETY: the byte below the top is inside the writable stack.
        unsafe { *top.sub(1) = 7 };
        drop(first);
        let again = stacks.new_stack(64 << 10, false).unwrap();
        assert_eq!(again.top(), top, "the same stack again");
        // SAFETY: as above.
        assert_eq!(unsafe { *again.top().sub(1) }, 7);
        drop(again);
        let zeroed = stacks.new_stack(64 << 10, true).unwrap();
        assert_eq!(zeroed.top(), top);
        // SAFETY: as above.
        assert_eq!(unsafe { *zeroed.top().sub(1) }, 0);
        let other = stacks.new_stack(64 << 10, false).unwrap();
        assert_ne!(other.top(), top, "one stack is lent to one instance");
    }
}
