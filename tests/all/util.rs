//! Shared helpers: where the guests are, a runtime per test binary, executors
//! with a given sandbox, documents.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use jina_wasm::Document;
use jina_wasm::executor::{
    Executor, ExecutorSpec, LoadedComponent, Runtime, RuntimeOptions, Sandbox,
};
use serde_json::Value;

/// Cargo's target directory: `$CARGO_TARGET_DIR` when set, else `./target`.
pub fn target_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// Path of a guest built by `make guests`.
pub fn wasm(crate_name: &str) -> PathBuf {
    let path = target_dir()
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(
        path.exists(),
        "{} is missing: run `make guests` (or `make test`) first",
        path.display()
    );
    path
}

/// The `jina-wasm` binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jina-wasm"))
}

/// A compiled-component cache shared by every test in this binary and by the
/// `jina-wasm` processes they start, so each guest is compiled once. It lives
/// in the target directory (a static temp dir would never be removed: statics
/// are not dropped); entries are keyed by the component's hash and the engine's,
/// so a stale one is never used.
pub fn cache_dir() -> &'static std::path::Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = target_dir().join("test-component-cache");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// The temp dir (`TMPDIR`) of every `jina-wasm` process the tests start
/// but Flows (`FlowProcess` gives each its own): what one leaves when a test
/// kills it (a Pod's copies of its executor files) stays in the target
/// directory, where the next such process sweeps it, not in `/tmp`.
pub fn temp_root() -> &'static std::path::Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = target_dir().join("test-tmp");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// `jina-wasm` as the tests start it: the shared component cache, and
/// [`temp_root`] as its temp dir.
pub fn jina_command() -> std::process::Command {
    let mut command = std::process::Command::new(bin());
    command
        .env("JINA_WASM_CACHE_DIR", cache_dir())
        .env("TMPDIR", temp_root());
    command
}

pub fn runtime() -> Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Runtime::new(RuntimeOptions {
                cache_dir: Some(cache_dir().to_path_buf()),
                ..Default::default()
            })
            .unwrap()
        })
        .clone()
}

pub fn load(crate_name: &str) -> Arc<LoadedComponent> {
    runtime()
        .load(&wasm(crate_name))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Starts a guest with a config and a sandbox.
pub fn start(crate_name: &str, config: Value, sandbox: Sandbox) -> Executor {
    try_start(crate_name, config, sandbox).unwrap_or_else(|e| panic!("{e}"))
}

pub fn try_start(
    crate_name: &str,
    config: Value,
    sandbox: Sandbox,
) -> Result<Executor, jina_wasm::ExecutorError> {
    let spec = ExecutorSpec {
        name: crate_name.to_string(),
        config,
        sandbox,
    };
    Executor::start(runtime(), load(crate_name), spec)
}

pub fn text_doc(id: &str, text: &str) -> Document {
    Document {
        id: id.into(),
        text: Some(text.into()),
        ..Default::default()
    }
}

/// A Python virtualenv under the target directory with `requirements`
/// (relative to the repository) installed from PyPI, made once and reused;
/// returns its interpreter.
pub fn python_venv(name: &str, requirements: &str) -> PathBuf {
    let venv = target_dir().join(name);
    let python = venv.join("bin/python");
    let requirements = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(requirements);
    // Tests run in parallel and several share one virtualenv: on a clean
    // machine two pip installs into the same folder race and fail (pip's
    // `assert os.path.exists(pyc_path)`), so one test at a time makes or
    // checks a virtualenv; the rest wait and reuse it.
    static MAKING: Mutex<()> = Mutex::new(());
    let _making = MAKING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Reinstall, from an empty folder, when the requirements change or an
    // earlier install stopped half-way (no marker).
    let marker = venv.join(".installed");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
        let _ = std::fs::remove_dir_all(&venv);
        let ok = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap()
            .success();
        assert!(ok, "python3 -m venv {} failed", venv.display());
        let ok = std::process::Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements)
            .status()
            .unwrap()
            .success();
        assert!(ok, "pip install -r {} failed", requirements.display());
        std::fs::write(&marker, wanted).unwrap();
    }
    python
}

/// The tests' HTTP client: blocking, no proxy (every server is on loopback), a
/// fresh connection per request (servers come and go, ports are reused), and
/// a 120 s limit on any one exchange.
pub fn http() -> &'static reqwest::blocking::Client {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .expect("a plain-HTTP client builds")
    })
}

/// Sends `signal` to process `pid` (rustix: no `unsafe`); false if it is gone.
/// `kill -9 pid`, asserting it was sent.
pub fn kill_9(pid: u32) {
    assert!(signal(pid, rustix::process::Signal::KILL), "kill -9 {pid}");
}

pub fn signal(pid: u32, signal: rustix::process::Signal) -> bool {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .expect("a child's pid");
    rustix::process::kill_process(pid, signal).is_ok()
}

/// Every id stored in the workspace `dir` of the indexer `crate_name` (started
/// with `config`), read through a read-only instance's `/export` in pages:
/// what a restart would serve. The executor API blocks (wasmtime-wasi runs its
/// own runtime), so this runs on a thread of its own, off any async runtime.
pub fn stored_ids(crate_name: &str, config: Value, dir: &Path) -> BTreeSet<String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let sandbox = Sandbox {
                workspace: Some(dir.to_path_buf()),
                read_only: true,
                ..Sandbox::default()
            };
            let mut ix = start(crate_name, config, sandbox);
            let mut ids = BTreeSet::new();
            loop {
                let page = ix
                    .handle(
                        "/export",
                        &[],
                        &serde_json::json!({"offset": ids.len(), "limit": 1000}),
                    )
                    .unwrap();
                let n = page.len();
                ids.extend(page.into_iter().map(|d| d.id));
                if n < 1000 {
                    return ids;
                }
            }
        })
        .join()
        .unwrap()
    })
}

/// Sends the control command `name` to `address` and returns the answer's
/// JSON; a name outside the command list is sent as it is (to test the refusal).
pub async fn control(address: &str, name: &str) -> anyhow::Result<Value> {
    use jina_wasm::control::{self, Command};
    match Command::parse(name) {
        Some(command) => control::ask(address, command).await,
        None => control::ask_named(address, name).await,
    }
}
