//! What a tenant's Pea or Pod request may ask of the sandbox, bounded.
//!
//! Each limit a request may set (docs/daemon.md, "Limits a request sets"):
//! - `memory_hwm` ≤ the tenant's `memory_per_pea` (its default), and the
//!   Peas' sum ≤ `total_memory` (api/objects.rs);
//! - `disk_quota` ≤ the tenant's `disk` (default: the smaller of the
//!   sandbox's 4 GiB and `disk`): one Pea cannot be granted more disk than
//!   its tenant has (state still counts in `disk` only when measured, as
//!   docs/daemon.md says);
//! - `max_files` ≤ the tenant's `files` (default: the smaller of 100,000
//!   and `files`), for the same reason;
//! - `max_result_docs`, `max_result_bytes`, `log_rate` ≤ the sandbox's
//!   defaults (1,000,000 documents, 256 MiB, 200 lines/s): the daemon's own
//!   maxima; the answer is held by the Pea's host process outside
//!   `memory_hwm`, and the log lines are written by it; a tenant may lower
//!   them, not raise them;
//! - `timeout_ready`, `timeout_request`, `timeout_init`: not bounded beyond
//!   the 365 days every duration is held to. A Pea waiting holds only what
//!   the quota already counts (its Peas and memory) and a lease ends it;
//!   CPU is not a quota (no cgroups), and a tenant can keep a core busy by
//!   sending calls whatever the timeout.
//!
//! Past a bound the request is refused with 403 naming the setting, its
//! value and the bound. The body's own size and bytes are checked too
//! ([`check_body`], 400): what the child's argv could not carry.

use std::collections::BTreeMap;

use serde_json::Value;

use super::tenants::Quota;
use crate::executor::sandbox as limits;
use crate::flow::spec::PodSpec;
use crate::units::format_size;

/// The most bytes of `with` (as JSON) a request may carry.
pub const MAX_WITH_BYTES: usize = 64 << 10;
/// The most bytes of `env` (every `KEY=value`) a request may carry.
pub const MAX_ENV_BYTES: usize = 64 << 10;

/// Refuses what a child process could not be started with, naming the
/// field: a NUL byte in `env`, and `with` or `env` over their limits (the
/// argv of a process is bounded by the OS, `E2BIG`).
///
/// # Errors
/// The field and why, for a 400 answer.
pub fn check_body(pod: &PodSpec) -> Result<(), String> {
    check_env(&pod.env)?;
    if let Some(with) = &pod.with {
        let bytes = serde_json::to_string(with).map_or(usize::MAX, |s| s.len());
        if bytes > MAX_WITH_BYTES {
            return Err(format!(
                "with: {bytes} bytes as JSON, more than the {MAX_WITH_BYTES} a request may carry"
            ));
        }
    }
    Ok(())
}

fn check_env(env: &BTreeMap<String, String>) -> Result<(), String> {
    let mut bytes = 0usize;
    for (key, value) in env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(format!(
                "env: `{}` is not a variable name",
                key.escape_debug()
            ));
        }
        if value.contains('\0') {
            return Err(format!("env: `{key}` holds a NUL byte"));
        }
        bytes = bytes.saturating_add(key.len() + value.len() + 2);
    }
    if bytes > MAX_ENV_BYTES {
        return Err(format!(
            "env: {bytes} bytes, more than the {MAX_ENV_BYTES} a request may carry"
        ));
    }
    Ok(())
}

/// The disk quota and file cap a Pea gets: as asked, else the sandbox's
/// default but no more than the tenant's.
///
/// # Errors
/// `disk_quota` not a size, named.
pub fn disk_and_files(pod: &PodSpec, quota: &Quota) -> Result<(u64, u64), String> {
    let disk = match &pod.disk_quota {
        Some(size) => size_of("disk_quota", size)?,
        None => limits::DEFAULT_DISK_QUOTA.min(quota.disk),
    };
    let files = pod
        .max_files
        .unwrap_or(limits::DEFAULT_MAX_FILES.min(quota.files));
    Ok((disk, files))
}

fn size_of(field: &str, value: &Value) -> Result<u64, String> {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    crate::units::parse_limit_size(&text).map_err(|e| format!("{field}: {e}"))
}

/// The first limit `pod` asks for past its bound (the module's list), as
/// "`setting` value is more than bound" for a 403 answer.
///
/// # Errors
/// A size that does not parse (checked as the request was read), named.
pub fn over_bound(
    pod: &PodSpec,
    (disk, files): (u64, u64),
    quota: &Quota,
) -> Result<Option<String>, String> {
    if disk > quota.disk {
        return Ok(Some(format!(
            "disk_quota {} is more than the tenant's disk {}",
            format_size(disk),
            format_size(quota.disk)
        )));
    }
    if files > quota.files {
        return Ok(Some(format!(
            "max_files {files} is more than the tenant's files {}",
            quota.files
        )));
    }
    if let Some(docs) = pod.max_result_docs
        && docs > limits::DEFAULT_MAX_RESULT_DOCS
    {
        return Ok(Some(format!(
            "max_result_docs {docs} is more than the daemon's maximum {}",
            limits::DEFAULT_MAX_RESULT_DOCS
        )));
    }
    if let Some(size) = &pod.max_result_bytes {
        let bytes = size_of("max_result_bytes", size)?;
        if bytes > limits::DEFAULT_MAX_RESULT_BYTES {
            return Ok(Some(format!(
                "max_result_bytes {} is more than the daemon's maximum {}",
                format_size(bytes),
                format_size(limits::DEFAULT_MAX_RESULT_BYTES)
            )));
        }
    }
    if let Some(rate) = pod.log_rate
        && rate > limits::DEFAULT_LOG_RATE
    {
        return Ok(Some(format!(
            "log_rate {rate} is more than the daemon's maximum {} lines/s",
            limits::DEFAULT_LOG_RATE
        )));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::objects::{CreateRequest, Kind};
    use serde_json::json;

    fn request(mut body: Value) -> CreateRequest {
        body["workspace"] = json!("w");
        body["uses"] = json!("a.wasm");
        serde_json::from_value(body).unwrap()
    }

    /// The first limit past its bound, for the default quota (1 GiB of disk,
    /// 10,000 files).
    fn over(body: Value) -> Option<String> {
        let r = request(body);
        let plan = r.plan(Kind::Pod, &Quota::default()).unwrap();
        let limits = (plan.disk_quota, plan.max_files);
        over_bound(&r.pod, limits, &Quota::default()).unwrap()
    }

    /// Hostile pass 4 (H4-5): `disk_quota: -1` gave the child 1 PiB of disk
    /// and `max_files` passed through, past a tenant's 1 GiB and 10,000.
    #[test]
    fn every_limit_a_tenant_sets_is_bounded() {
        let refused = |body: Value, start: &str| {
            let e = over(body.clone()).unwrap_or_else(|| panic!("{body} was taken"));
            assert!(e.starts_with(start), "{body}: {e}");
        };
        refused(
            json!({"disk_quota": "-1"}),
            "disk_quota 1024 TiB is more than the tenant's disk 1 GiB",
        );
        refused(
            json!({"disk_quota": "2GiB"}),
            "disk_quota 2 GiB is more than",
        );
        refused(
            json!({"max_files": u64::MAX}),
            "max_files 18446744073709551615 is more than the tenant's files 10000",
        );
        refused(
            json!({"max_result_docs": 1_000_001}),
            "max_result_docs 1000001 is more than the daemon's maximum 1000000",
        );
        refused(json!({"max_result_bytes": "-1"}), "max_result_bytes ");
        refused(
            json!({"log_rate": 201}),
            "log_rate 201 is more than the daemon's maximum 200",
        );
        let taken = json!({
            "disk_quota": "1GiB", "max_files": 10_000, "max_result_docs": 5,
            "max_result_bytes": "256MiB", "log_rate": 200, "timeout_request": "-1",
        });
        assert_eq!(over(taken), None);
        // Not asked: the sandbox's default, but no more than the tenant has.
        let plan = request(json!({}))
            .plan(Kind::Pea, &Quota::default())
            .unwrap();
        assert_eq!((plan.disk_quota, plan.max_files), (1 << 30, 10_000));
        let big = Quota {
            disk: 1 << 40,
            files: 1 << 30,
            ..Quota::default()
        };
        let plan = request(json!({})).plan(Kind::Pea, &big).unwrap();
        assert_eq!(
            (plan.disk_quota, plan.max_files),
            (limits::DEFAULT_DISK_QUOTA, limits::DEFAULT_MAX_FILES)
        );
    }

    /// Hostile pass 4 (H4-6): these failed late, as 422 "nul byte found" or
    /// "Argument list too long" from starting the process.
    #[test]
    fn what_an_argv_cannot_carry_is_refused_named() {
        let refused = |body: Value| {
            request(body)
                .plan(Kind::Pea, &Quota::default())
                .unwrap_err()
        };
        let e = refused(json!({"env": {"A": "x\u{0}y"}}));
        assert_eq!(e, "env: `A` holds a NUL byte");
        let e = refused(json!({"env": {"A\u{0}B": "1"}}));
        assert_eq!(e, "env: `A\\0B` is not a variable name");
        let e = refused(json!({"env": {"A": "v".repeat(200_000)}}));
        assert_eq!(
            e,
            "env: 200003 bytes, more than the 65536 a request may carry"
        );
        let e = refused(json!({"with": {"a": "v".repeat(200_000)}}));
        assert!(
            e.starts_with("with: 200008 bytes as JSON, more than the 65536"),
            "{e}"
        );
        let e = refused(json!({"env": {"A=B": "1"}}));
        assert_eq!(e, "env: `A=B` is not a variable name");
        // Up to the limits, taken.
        let fits = json!({"env": {"A": "v".repeat(MAX_ENV_BYTES - 3)}, "with": {"a": "\u{0}"}});
        assert!(request(fits).plan(Kind::Pea, &Quota::default()).is_ok());
    }
}
