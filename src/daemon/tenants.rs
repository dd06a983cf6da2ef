//! The tenants file: bearer tokens, each one a tenant with its quotas.
//!
//! ```yaml
//! tenants:
//!   - name: alice
//!     token: s3cret-a          # the bearer token; or token_env: ALICE_TOKEN
//!     quota:
//!       max_peas: 8            # Peas alive at once (a Pod counts its shards/replicas)
//!       memory_per_pea: 512MiB # the largest memory_hwm one Pea may ask for
//!       total_memory: 2GiB     # the sum of memory_hwm over every live Pea
//!       disk: 1GiB             # uploads (stored once per content) + executor state
//!       files: 10000           # uploaded file names, over all its workspaces
//!       requests: 32           # calls open at once (a log stream holds one)
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::units::parse_size;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantsFile {
    tenants: Vec<TenantEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantEntry {
    name: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    token_env: Option<String>,
    #[serde(default)]
    quota: QuotaEntry,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaEntry {
    max_peas: Option<usize>,
    memory_per_pea: Option<String>,
    total_memory: Option<String>,
    disk: Option<String>,
    files: Option<u64>,
    requests: Option<usize>,
}

/// What one tenant may use at once.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Quota {
    pub max_peas: usize,
    pub memory_per_pea: u64,
    pub total_memory: u64,
    pub disk: u64,
    /// Uploaded file names over all the tenant's workspaces: empty files cost
    /// no `disk` but still a name, folders and a manifest entry each.
    pub files: u64,
    /// Calls open at once: a call holds one from its headers to the last byte
    /// of its answer (a log stream until it ends). One tenant's long-lived
    /// calls then cannot take the daemon's whole connection cap
    /// (`--http-max-connections`) from the others.
    pub requests: usize,
}

impl Default for Quota {
    /// 16 Peas, 1 GiB each (the sandbox's default memory_hwm), 4 GiB in all,
    /// 1 GiB of disk, 10,000 uploaded files, 32 calls open at once.
    fn default() -> Self {
        Quota {
            max_peas: 16,
            memory_per_pea: 1 << 30,
            total_memory: 4 << 30,
            disk: 1 << 30,
            files: 10_000,
            requests: 32,
        }
    }
}

/// One tenant: a name (its directory under the data dir), its token, its quota.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub name: String,
    pub token: String,
    pub quota: Quota,
}

/// Reads and checks a tenants file.
///
/// # Errors
/// A message naming the file and the tenant: unreadable, not YAML, a name that
/// is not a safe directory name, a missing or repeated token, a bad size.
pub fn load(path: &Path) -> anyhow::Result<Vec<Tenant>> {
    let at = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("tenants file {at}: cannot read: {e}"))?;
    let file: TenantsFile =
        serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("tenants file {at}: {e}"))?;
    let mut tenants: Vec<Tenant> = Vec::new();
    for (i, entry) in file.tenants.into_iter().enumerate() {
        let fail =
            |m: String| anyhow::anyhow!("tenants file {at}: tenants[{i}] (`{}`): {m}", entry.name);
        if !crate::client_daemon::is_safe_id(&entry.name) {
            return Err(fail(
                "a name is 1-64 of A-Z a-z 0-9 . _ - and does not start with `.`".into(),
            ));
        }
        let token = match (&entry.token, &entry.token_env) {
            (Some(t), None) => t.clone(),
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                fail(format!(
                    "environment variable `{var}` (token_env) is not set"
                ))
            })?,
            _ => return Err(fail("give exactly one of `token` or `token_env`".into())),
        };
        if token.len() < 8 {
            return Err(fail("a token has at least 8 characters".into()));
        }
        if tenants.iter().any(|t| t.name == entry.name) {
            return Err(fail("another tenant has the same name".into()));
        }
        if tenants.iter().any(|t| t.token == token) {
            return Err(fail("another tenant has the same token".into()));
        }
        let defaults = Quota::default();
        let size = |field: &str, value: &Option<String>, default: u64| -> anyhow::Result<u64> {
            value.as_deref().map_or(Ok(default), |v| {
                parse_size(v).map_err(|e| fail(format!("quota.{field}: {e}")))
            })
        };
        let quota = Quota {
            max_peas: entry.quota.max_peas.unwrap_or(defaults.max_peas),
            memory_per_pea: size(
                "memory_per_pea",
                &entry.quota.memory_per_pea,
                defaults.memory_per_pea,
            )?,
            total_memory: size(
                "total_memory",
                &entry.quota.total_memory,
                defaults.total_memory,
            )?,
            disk: size("disk", &entry.quota.disk, defaults.disk)?,
            files: entry.quota.files.unwrap_or(defaults.files),
            requests: entry.quota.requests.unwrap_or(defaults.requests),
        };
        if quota.requests == 0 {
            return Err(fail(
                "quota.requests is 0: the tenant could make no call at all; give 1 or more".into(),
            ));
        }
        tenants.push(Tenant {
            name: entry.name,
            token,
            quota,
        });
    }
    if tenants.is_empty() {
        anyhow::bail!(
            "tenants file {at}: no tenants: every call needs a token, so the daemon would refuse everything"
        );
    }
    Ok(tenants)
}

/// Compares two tokens in time that does not depend on where they differ
/// (only on their lengths).
pub fn same_token(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> anyhow::Result<Vec<Tenant>> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tenants.yml");
        std::fs::write(&file, yaml).unwrap();
        load(&file)
    }

    #[test]
    fn quotas_default_and_parse() {
        let tenants = parse("tenants:\n  - name: a\n    token: aaaaaaaa\n    quota: {max_peas: 2, disk: 1MiB}\n  - name: b\n    token: bbbbbbbb\n").unwrap();
        assert_eq!(tenants[0].quota.max_peas, 2);
        assert_eq!(tenants[0].quota.disk, 1 << 20);
        assert_eq!(tenants[1].quota.memory_per_pea, 1 << 30);
    }

    #[test]
    fn bad_files_name_the_tenant() {
        let e = parse("tenants:\n  - name: ../x\n    token: aaaaaaaa\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("(`../x`)"), "{e}");
        let e = parse(
            "tenants:\n  - name: a\n    token: same-token\n  - name: b\n    token: same-token\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("(`b`): another tenant has the same token"),
            "{e}"
        );
        let e = parse("tenants:\n  - name: a\n    token: short\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 8"), "{e}");
        assert!(parse("tenants: []\n").is_err());
        assert!(same_token("abc", "abc") && !same_token("abc", "abd") && !same_token("abc", "ab"));
    }
}
