//! Tenants: the owners of executors in a process that hosts several (a Pod's
//! thread-backed Peas, later the daemon). A tenant has a memory budget shared
//! by all its instances, on top of each instance's own `--memory-hwm`, and its
//! CPU time is accounted (thread CPU time spent in its guest calls).
//!
//! Memory is reserved when an instance's linear memory grows (the store's
//! `ResourceLimiter`, `sandbox::Limiter`) and given back when the instance is
//! dropped, so the budget always equals what the tenant's live instances hold.
//! A growth that would pass the budget is refused: the guest sees
//! `memory.grow` fail, as for its own limit, and the call fails with
//! `memory-limit` naming the tenant.
//!
//! CPU is not capped per tenant: a runaway call is bounded by its own time
//! limit, and a Pea runs one call at a time, so a tenant's runaway costs at most
//! one core per Pea it owns for at most `--timeout-request`. docs/limits.md
//! ("Noisy neighbours") has the measured effect on another tenant.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Who owns an executor, and the tenant's memory budget (`--tenant`,
/// `--tenant-memory`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSpec {
    pub name: String,
    /// Bytes of linear memory all the tenant's instances in this process may hold.
    pub memory: u64,
}

/// One tenant's live accounts.
#[derive(Debug)]
pub struct Tenant {
    name: String,
    budget: u64,
    memory: AtomicU64,
    cpu_ns: AtomicU64,
    calls: AtomicU64,
}

impl Tenant {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The memory budget, bytes.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes of linear memory the tenant's live instances hold.
    pub fn memory_used(&self) -> u64 {
        self.memory.load(Ordering::Relaxed)
    }

    /// Thread CPU time spent in the tenant's guest calls (init, handle, dump, close).
    pub fn cpu_time(&self) -> Duration {
        Duration::from_nanos(self.cpu_ns.load(Ordering::Relaxed))
    }

    /// Guest calls made.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Takes `bytes` from the budget; `false` (and nothing taken) when it
    /// does not fit.
    pub(super) fn reserve(&self, bytes: u64) -> bool {
        self.memory
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|&total| total <= self.budget)
            })
            .is_ok()
    }

    pub(super) fn release(&self, bytes: u64) {
        self.memory.fetch_sub(bytes, Ordering::AcqRel);
    }

    pub(super) fn account(&self, cpu: Duration) {
        self.cpu_ns.fetch_add(
            u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

/// The tenants of one process, by name. A tenant lives while one of its
/// executors does.
#[derive(Debug, Default)]
pub struct Tenants {
    by_name: Mutex<HashMap<String, Weak<Tenant>>>,
}

impl Tenants {
    /// The tenant `spec` names: the live one, or a new one.
    ///
    /// # Errors
    /// When a live tenant of that name has a different budget.
    pub fn get(&self, spec: &TenantSpec) -> Result<Arc<Tenant>, String> {
        let mut by_name = self.by_name.lock().expect("tenants lock");
        by_name.retain(|_, tenant| tenant.strong_count() > 0);
        if let Some(tenant) = by_name.get(&spec.name).and_then(Weak::upgrade) {
            if tenant.budget != spec.memory {
                return Err(format!(
                    "tenant `{}` already runs here with a memory budget of {}, not {}",
                    spec.name,
                    crate::units::format_size(tenant.budget),
                    crate::units::format_size(spec.memory)
                ));
            }
            return Ok(tenant);
        }
        let tenant = Arc::new(Tenant {
            name: spec.name.clone(),
            budget: spec.memory,
            memory: AtomicU64::new(0),
            cpu_ns: AtomicU64::new(0),
            calls: AtomicU64::new(0),
        });
        by_name.insert(spec.name.clone(), Arc::downgrade(&tenant));
        Ok(tenant)
    }

    /// A live tenant by name.
    pub fn find(&self, name: &str) -> Option<Arc<Tenant>> {
        self.by_name
            .lock()
            .expect("tenants lock")
            .get(name)
            .and_then(Weak::upgrade)
    }
}

/// Lowers the calling thread to nice 19 (Linux): a waking thread of normal
/// priority preempts it at once, and it gets a small share (about 1.5% of a
/// normal thread's) while others want the CPU. Returns whether it did.
///
/// Not `SCHED_IDLE`, which the first version used: that runs a thread only
/// when no other wants the CPU, so on a busy host a legitimate long call
/// starved until its `--timeout-request` (seen in a loaded test run). Nice 19
/// keeps the preemption that protects short calls and never starves.
///
/// Going back needs privileges a host usually lacks, so only a call's own
/// thread is demoted, and it ends with the call (`offload.rs`).
pub(super) fn demote_current_thread() -> bool {
    #[cfg(target_os = "linux")]
    {
        // Linux keeps the nice value per thread, and `PRIO_PROCESS` with pid 0
        // (`None`) means the calling thread (the kernel resolves 0 to `current`).
        return rustix::process::setpriority_process(None, 19).is_ok();
    }
    #[allow(unreachable_code)]
    false
}

/// Runs a guest call, charging the CPU time it takes to `tenant`, if any.
/// A call may move to another thread between two polls (`offload.rs`), so
/// each poll is measured on the thread that makes it.
pub(super) async fn metered<F: Future>(tenant: Option<&Tenant>, call: F) -> F::Output {
    let Some(tenant) = tenant else {
        return call.await;
    };
    let mut call = std::pin::pin!(call);
    let mut cpu = Duration::ZERO;
    let output = std::future::poll_fn(|cx| {
        let before = thread_cpu_time();
        let poll = call.as_mut().poll(cx);
        cpu += thread_cpu_time().saturating_sub(before);
        poll
    })
    .await;
    tenant.account(cpu);
    output
}

/// CPU time of the calling thread (Linux; zero elsewhere).
fn thread_cpu_time() -> Duration {
    #[cfg(target_os = "linux")]
    {
        if let Ok(time) = Duration::try_from(rustix::time::clock_gettime(
            rustix::time::ClockId::ThreadCPUTime,
        )) {
            return time;
        }
    }
    Duration::ZERO
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_shared_and_released() {
        let tenants = Tenants::default();
        let spec = TenantSpec {
            name: "acme".into(),
            memory: 100,
        };
        let a = tenants.get(&spec).unwrap();
        let b = tenants.get(&spec).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(a.reserve(60));
        assert!(!b.reserve(50), "the budget is shared");
        assert!(b.reserve(40));
        a.release(60);
        assert_eq!(b.memory_used(), 40);
        assert!(
            tenants
                .get(&TenantSpec {
                    memory: 5,
                    ..spec.clone()
                })
                .unwrap_err()
                .contains("already runs")
        );
        drop((a, b));
        // Gone with its last executor: a new budget is fine.
        assert_eq!(
            tenants
                .get(&TenantSpec { memory: 5, ..spec })
                .unwrap()
                .budget(),
            5
        );
    }
}
