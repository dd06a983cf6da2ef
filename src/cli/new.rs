//! `jina-wasm new`: scaffold an executor project in Rust, Python or JavaScript.
//!
//! The templates (src/cli/templates/), the WIT contract and the Python and
//! JavaScript SDKs are compiled into the binary, so a scaffold needs nothing
//! from the checkout but, for Rust, the SDK crate: it is not on crates.io, so
//! the scaffold's Cargo.toml names it by path (`--sdk`, by default the
//! `guest-sdk` folder of the checkout this binary was built from).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

/// Create an executor project: a manifest, a source file with one endpoint
/// (`/upper`), a build command and a README with the commands to build and
/// run it.
///
/// Rust: `cargo build --release` (needs the wasm32-wasip2 target).
/// Python: `sh build.sh` (installs componentize-py into .venv on first use).
/// JavaScript: `npm ci && npm run build` (installs componentize-js).
#[derive(Debug, Args)]
pub struct NewCommand {
    /// The executor's name: lower-case letters, digits and dashes, starting
    /// with a letter (`keyword-tagger`). Also the crate, package and file name.
    pub name: String,

    /// The language to write the executor in.
    #[arg(long, value_enum, ignore_case = true)]
    pub lang: Lang,

    /// The folder to create (must not exist, or be empty). Default: ./NAME.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Rust only: the jina-guest-sdk folder the scaffold's Cargo.toml points at.
    /// Default: the guest-sdk folder of the checkout this binary was built from.
    #[arg(long, value_name = "PATH")]
    pub sdk: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// Where the Rust SDK was when this binary was built.
const BUILT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/guest-sdk");

const WIT: &str = include_str!("../../wit/executor.wit");

/// (path in the scaffold, template). `{{name}}`, `{{crate}}`, `{{class}}` and
/// `{{sdk}}` are replaced; `.gitignore` is stored as `gitignore` so it does
/// not act on this repository.
fn files(lang: Lang) -> Vec<(&'static str, &'static str)> {
    match lang {
        Lang::Rust => vec![
            ("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
            (
                ".cargo/config.toml",
                include_str!("templates/rust/.cargo/config.toml"),
            ),
            ("src/lib.rs", include_str!("templates/rust/lib.rs")),
            ("README.md", include_str!("templates/rust/README.md")),
            (".gitignore", include_str!("templates/rust/gitignore")),
        ],
        Lang::Python => vec![
            ("executor.py", include_str!("templates/python/executor.py")),
            ("build.sh", include_str!("templates/python/build.sh")),
            ("README.md", include_str!("templates/python/README.md")),
            (".gitignore", include_str!("templates/python/gitignore")),
            (
                "requirements.txt",
                include_str!("../../guest-sdk/python/requirements.txt"),
            ),
            (
                "jina_executor/__init__.py",
                include_str!("../../guest-sdk/python/jina_executor/__init__.py"),
            ),
            (
                "jina_executor/wire.py",
                include_str!("../../guest-sdk/python/jina_executor/wire.py"),
            ),
            (
                "jina_executor/component.py",
                include_str!("../../guest-sdk/python/jina_executor/component.py"),
            ),
            ("wit/executor.wit", WIT),
        ],
        Lang::Js => vec![
            ("executor.js", include_str!("templates/js/executor.js")),
            ("README.md", include_str!("templates/js/README.md")),
            (".gitignore", include_str!("templates/js/gitignore")),
            (
                "package.json",
                include_str!("../../guest-sdk/js/package.json"),
            ),
            (
                "package-lock.json",
                include_str!("../../guest-sdk/js/package-lock.json"),
            ),
            (
                "jina-executor.js",
                include_str!("../../guest-sdk/js/jina-executor.js"),
            ),
            ("build.mjs", include_str!("../../guest-sdk/js/build.mjs")),
            ("wit/executor.wit", WIT),
        ],
    }
}

impl NewCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        check_name(&self.name)?;
        let dir = self
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(&self.name));
        if std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some()) {
            bail!(
                "{}: the folder exists and is not empty; pick another --dir or NAME",
                dir.display()
            );
        }
        let sdk = match self.lang {
            Lang::Rust => Some(self.rust_sdk()?),
            _ => None,
        };
        let class = class_name(&self.name);
        let krate = self.name.replace('-', "_");
        for (path, template) in files(self.lang) {
            let mut text = template
                .replace("{{name}}", &self.name)
                .replace("{{crate}}", &krate)
                .replace("{{class}}", &class)
                .replace(
                    "{{sdk}}",
                    &sdk.as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                );
            if self.lang == Lang::Js && path.starts_with("package") {
                text = package_json(&text, &self.name);
            }
            let target = dir.join(path);
            std::fs::create_dir_all(target.parent().unwrap())
                .and_then(|()| std::fs::write(&target, text))
                .with_context(|| format!("writing {}", target.display()))?;
        }
        let (build, wasm) = match self.lang {
            Lang::Rust => (
                "cargo build --release",
                format!("target/wasm32-wasip2/release/{krate}.wasm"),
            ),
            Lang::Python => ("sh build.sh", format!("{}.wasm", self.name)),
            Lang::Js => ("npm ci && npm run build", format!("{}.wasm", self.name)),
        };
        println!(
            "created {} ({} executor `{}`)",
            dir.display(),
            format!("{:?}", self.lang).to_lowercase(),
            self.name
        );
        println!("  build: cd {} && {build}", dir.display());
        println!(
            "  run:   echo hello | jina-wasm run --uses {}/{wasm} --endpoint /upper",
            dir.display()
        );
        Ok(ExitCode::SUCCESS)
    }

    /// The SDK folder, absolute, checked to be the jina-guest-sdk crate.
    fn rust_sdk(&self) -> anyhow::Result<PathBuf> {
        let sdk = self.sdk.clone().unwrap_or_else(|| PathBuf::from(BUILT_SDK));
        let manifest = sdk.join("Cargo.toml");
        let is_sdk = std::fs::read_to_string(&manifest)
            .is_ok_and(|t| t.contains("name = \"jina-guest-sdk\""));
        if !is_sdk {
            bail!(
                "{}: not the jina-guest-sdk crate (the Rust SDK is not on crates.io; pass --sdk PATH to the guest-sdk folder of a jina-wasm checkout)",
                sdk.display()
            );
        }
        Ok(std::path::absolute(&sdk).unwrap_or(sdk))
    }
}

/// A name usable as a crate, a Python/npm package and a file name.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !starts_well
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || name.ends_with('-')
    {
        bail!(
            "executor name {name:?}: use lower-case letters, digits and dashes, starting with a letter (keyword-tagger)"
        );
    }
    Ok(())
}

/// `keyword-tagger` -> `KeywordTagger`.
fn class_name(name: &str) -> String {
    name.split('-')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The SDK's package.json / package-lock.json renamed to the executor, with a
/// `build` script.
fn package_json(text: &str, name: &str) -> String {
    let mut value: serde_json::Value =
        serde_json::from_str(text).expect("the embedded package files are JSON");
    value["name"] = name.into();
    if let Some(root) = value.pointer_mut("/packages/") {
        root["name"] = name.into();
    }
    if value.get("lockfileVersion").is_none() {
        value["description"] = format!("The jina-wasm executor {name}").into();
        value["scripts"] =
            serde_json::json!({ "build": format!("node build.mjs executor.js {name}.wasm wit") });
    }
    serde_json::to_string_pretty(&value).unwrap() + "\n"
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_and_classes() {
        assert_eq!(super::class_name("keyword-tagger2"), "KeywordTagger2");
        assert!(super::check_name("keyword-tagger").is_ok());
        for bad in ["", "Tagger", "9lives", "a_b", "tag-", "a b"] {
            assert!(super::check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn templates_only_use_known_placeholders() {
        for lang in [super::Lang::Rust, super::Lang::Python, super::Lang::Js] {
            for (path, text) in super::files(lang) {
                let unknown = text
                    .match_indices("{{")
                    .map(|(i, _)| &text[i..])
                    .find(|rest| {
                        !["{{name}}", "{{crate}}", "{{class}}", "{{sdk}}"]
                            .iter()
                            .any(|p| rest.starts_with(p))
                    });
                assert!(
                    unknown.is_none(),
                    "{lang:?} {path}: {:?}",
                    unknown.map(|s| &s[..20.min(s.len())])
                );
            }
        }
    }
}
