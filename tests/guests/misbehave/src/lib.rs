//! `misbehave`: a test fixture that does on request what executors must not, so
//! host tests can check each sandbox limit is enforced and reported.
//!
//! - `with:`
//!   - `panic_in_init: true`: panic (trap) inside `init`.
//!   - `slow_init_ms: N`: busy-loop N milliseconds inside `init`.
//!   - `fail_init_if_exists: PATH`: `init` fails (`io`) while the file exists
//!     (a crash loop the host's test switches on and off from outside).
//! - Endpoints (parameters in brackets):
//!   - `/echo`: return the documents.
//!   - `/loop`: spin forever (fuel/epoch limits).
//!   - `/alloc`: allocate and touch 1 MiB blocks until the allocator fails (abort
//!     → trap; memory limits).
//!   - `/alloc-small`: allocate 64-byte nodes forever (same, through many
//!     small allocations).
//!   - `/recurse`: unbounded non-tail recursion on the wasm stack (stack limit).
//!   - `/recurse-shadow`: the same with a local array per frame, which lives on
//!     Rust's shadow stack in linear memory (an out-of-bounds trap when it runs out).
//!   - `/panic`: panic (trap).
//!   - `/read` [`path`]: one document whose text is the file's content; `io`
//!     error with the OS message on failure.
//!   - `/write` [`path`, `content`]: write the file; `io` error on failure.
//!   - `/symlink` [`target`, `link`]: create symlink `link` -> `target`; `io` error
//!     on failure.
//!   - `/hardlink` [`target`, `link`]: create hard link `link` to `target`; `io`
//!     error on failure.
//!   - `/fill` [`path`, `mib`]: write `mib` MiB into `path`, 1 MiB at a time
//!     (disk quota); `io` error on failure.
//!   - `/many-files` [`dir`, `n`]: create `dir` and `n` empty files in it
//!     (file-count cap); `io` error on failure.
//!   - `/sleep` [`ms`]: sleep `ms` milliseconds in one host call (absent:
//!     forever), then echo.
//!   - `/sleep-loop`: sleep 5 ms at a time, forever: a loop that gives the CPU
//!     away and never returns.
//!   - `/env`: one document tagged `{"env": {name: value}, "args": [..]}`.
//!   - `/socket` [`addr`]: TCP connect to `addr` (`"127.0.0.1:80"`); one document
//!     with text `"connected"`, or an `io` error.
//!   - `/big-embedding` [`n`]: one document with an `n`-float embedding.
//!   - `/many-docs` [`n`]: `n` documents `doc-0`, `doc-1`, ...
//!   - `/print` [`lines`, `line`]: print `line` `lines` times to stdout and to
//!     stderr; returns the documents.
//!   - `/log`: one structured log line per level, with fields; returns the documents.
//!   - `/time`: one document tagged `{"now_ms": wall clock ms since the epoch,
//!     "random": a random u64}`.
//!   - `/deep` [`dir`, `depth`, `name_len`, `mib`]: create `depth` nested
//!     directories under `dir`, open a file at the bottom, rename every
//!     directory (deepest first) to a name of `name_len` bytes so that the
//!     file's host path is far past PATH_MAX, then write `mib` MiB into it
//!     through the open handle; `io` error on failure.
//!   - `/log-fields` [`n`, `size`]: one `log` line with `n` fields of `size`
//!     bytes each; returns the documents.
//!   - `/only`: in the Pod Pea named by `parameters.who` (`shard-1`,
//!     `replica-0`, `shard-1/replica-0`), spin `parameters.ms` milliseconds or panic
//!     (`parameters.panic`); elsewhere echo. Tags each document with its place.
//!   - `/deep` [`levels`, default 5000]: one document `deep` with a chain of
//!     `levels` chunks below it (`deep-1` the deepest): a valid tree, far
//!     under any document count cap, as deep as the guest likes.
//!
//! I/O errors are `io` errors whose message ends with the Rust `io::ErrorKind` in
//! brackets (`[PermissionDenied]`), so tests can tell refusals apart.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jina_guest_sdk::log::{self, Level};
use jina_guest_sdk::prelude::*;

struct Misbehave {
    /// `shard-<i>`, `replica-<i>` or `shard-<i>/replica-<j>` inside a Pod
    /// (from the runtime args the Pod adds), else empty.
    place: String,
}

impl Executor for Misbehave {
    fn init(config: Config) -> Result<Self> {
        if config.get_or("panic_in_init", false)? {
            panic!("misbehave: asked to panic in init");
        }
        if let Some(path) = config.get::<String>("fail_init_if_exists")?
            && std::path::Path::new(&path).exists()
        {
            return Err(Error::io(format!(
                "misbehave: {path} exists, refusing to start"
            )));
        }
        if let Some(ms) = config.get::<u64>("slow_init_ms")? {
            let until = Instant::now() + Duration::from_millis(ms);
            while Instant::now() < until {
                black_box(());
            }
        }
        let args = config.runtime_args();
        let place = match (args.shard_id, &args.replica_id) {
            (Some(shard), Some(replica)) => format!("shard-{shard}/replica-{replica}"),
            (Some(shard), None) => format!("shard-{shard}"),
            (None, Some(replica)) => format!("replica-{replica}"),
            (None, None) => String::new(),
        };
        Ok(Misbehave { place })
    }

    fn routes() -> Routes<Self> {
        Routes::new()
            .on("/echo", Self::echo)
            .on("/loop", Self::spin)
            .on("/alloc", Self::alloc)
            .on("/alloc-small", Self::alloc_small)
            .on("/recurse", Self::recurse)
            .on("/recurse-shadow", Self::recurse_shadow)
            .on("/panic", Self::panic)
            .on("/read", Self::read)
            .on("/write", Self::write)
            .on("/symlink", Self::symlink)
            .on("/hardlink", Self::hardlink)
            .on("/fill", Self::fill)
            .on("/many-files", Self::many_files)
            .on("/sleep", Self::sleep)
            .on("/sleep-loop", Self::sleep_loop)
            .on("/env", Self::env)
            .on("/socket", Self::socket)
            .on("/big-embedding", Self::big_embedding)
            .on("/many-docs", Self::many_docs)
            .on("/print", Self::print)
            .on("/log", Self::log)
            .on("/time", Self::time)
            .on("/only", Self::only)
            .on("/deep", Self::deep)
            .on("/deep-dirs", Self::deep_dirs)
            .on("/log-fields", Self::log_fields)
    }
}

/// A required string parameter.
fn param(params: &Params, key: &str) -> Result<String> {
    params
        .get(key)?
        .ok_or_else(|| Error::bad_request(format!("parameters.{key} is required")))
}

fn io_error(what: &str, err: std::io::Error) -> Error {
    Error::io(format!("{what}: {err} [{:?}]", err.kind()))
}

impl Misbehave {
    fn echo(&mut self, docs: Vec<Document>, _: &Params) -> Result<Vec<Document>> {
        Ok(docs)
    }

    /// In the Pea at `parameters.who` (`shard-1`, `replica-0`): spin for
    /// `parameters.ms` milliseconds, or panic when `parameters.panic`. Elsewhere
    /// an echo. Each document is tagged with the place that handled it.
    fn only(&mut self, mut docs: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        if param(params, "who")? == self.place {
            if params.get_or("panic", false)? {
                panic!("misbehave: asked to panic in {}", self.place);
            }
            let until = Instant::now() + Duration::from_millis(params.get_or("ms", 0u64)?);
            while Instant::now() < until {
                black_box(());
            }
        }
        for doc in &mut docs {
            doc.tags.insert("place".into(), self.place.clone().into());
        }
        Ok(docs)
    }

    fn spin(&mut self, _: Vec<Document>, _: &Params) -> Result<Vec<Document>> {
        let mut counter = 0u64;
        loop {
            counter = black_box(counter.wrapping_add(1));
        }
    }

    fn alloc(&mut self, _: Vec<Document>, _: &Params) -> Result<Vec<Document>> {
        const MIB: usize = 1 << 20;
        let mut held: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut block = Vec::<u8>::with_capacity(MIB);
            // Touch every page so the memory is really committed.
            block.resize(MIB, 1);
            held.push(black_box(block));
        }
    }

    fn alloc_small(&mut self, _: Vec<Document>, _: &Params) -> Result<Vec<Document>> {
        struct Node {
            _next: Option<Box<Node>>,
            _payload: [u8; 56],
        }
        let mut head: Option<Box<Node>> = None;
        loop {
            head = Some(Box::new(Node {
                _next: head,
                _payload: black_box([7; 56]),
            }));
            black_box(&head);
        }
    }

    /// Unbounded recursion with nothing in linear memory: exhausts the wasm stack.
    fn recurse(&mut self, _: Vec<Document>, _: &Params) -> Result<Vec<Document>> {
        #[inline(never)]
        fn down(depth: u64, step: u64) -> u64 {
            if depth == u64::MAX {
                return depth;
            }
            // Not a tail call: the multiply-add after the call keeps every frame.
            down(depth.wrapping_add(step), step)
                .wrapping_mul(31)
                .wrapping_add(depth)
        }
        let depth = down(0, black_box(1));
        Ok(vec![Document::new("unreachable").with_tag("depth", depth)])
    }

    /// Unbounded recursion with a local array per frame: Rust keeps it on the
    /// shadow stack in linear memory, which runs out before the wasm stack does.
    fn recurse_shadow(&mut self, _: Vec<Document>, _: &Params) -> Result<Vec<Document>> {
        fn down(depth: u64) -> u64 {
            if black_box(depth) == u64::MAX {
                return depth;
            }
            let frame = black_box([depth; 16]);
            let below = down(black_box(depth + 1));
            black_box(below.wrapping_add(frame[depth as usize % 16]))
        }
        let depth = down(0);
        Ok(vec![Document::new("unreachable").with_tag("depth", depth)])
    }

    fn panic(&mut self, _: Vec<Document>, _: &Params) -> Result<Vec<Document>> {
        panic!("misbehave: asked to panic");
    }

    fn read(&mut self, _: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let path = param(params, "path")?;
        let text =
            std::fs::read_to_string(&path).map_err(|e| io_error(&format!("read {path}"), e))?;
        Ok(vec![Document::new(path).with_text(text)])
    }

    fn write(&mut self, docs: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let path = param(params, "path")?;
        let content = param(params, "content")?;
        std::fs::write(&path, content).map_err(|e| io_error(&format!("write {path}"), e))?;
        Ok(docs)
    }

    fn symlink(&mut self, docs: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let target = param(params, "target")?;
        let link = param(params, "link")?;
        symlink(&target, &link).map_err(|e| io_error(&format!("symlink {link} -> {target}"), e))?;
        Ok(docs)
    }

    fn hardlink(&mut self, docs: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let target = param(params, "target")?;
        let link = param(params, "link")?;
        std::fs::hard_link(&target, &link)
            .map_err(|e| io_error(&format!("hard link {link} -> {target}"), e))?;
        Ok(docs)
    }

    fn fill(&mut self, docs: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let path = param(params, "path")?;
        let mib: usize = params.get_or("mib", 1)?;
        let mut file =
            std::fs::File::create(&path).map_err(|e| io_error(&format!("create {path}"), e))?;
        let block = vec![0x5a; 1 << 20];
        for _ in 0..mib {
            file.write_all(&block)
                .map_err(|e| io_error(&format!("write {path}"), e))?;
        }
        Ok(docs)
    }

    fn many_files(&mut self, docs: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let dir = param(params, "dir")?;
        let n: usize = params.get_or("n", 0)?;
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&format!("mkdir {dir}"), e))?;
        for i in 0..n {
            let path = format!("{dir}/{i}");
            std::fs::File::create(&path).map_err(|e| io_error(&format!("create {path}"), e))?;
        }
        Ok(docs)
    }

    fn sleep(&mut self, docs: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let ms: Option<u64> = params.get("ms")?;
        std::thread::sleep(ms.map_or(Duration::MAX, Duration::from_millis));
        Ok(docs)
    }

    fn sleep_loop(&mut self, _: Vec<Document>, _: &Params) -> Result<Vec<Document>> {
        loop {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn env(&mut self, _: Vec<Document>, _: &Params) -> Result<Vec<Document>> {
        let env: Map<String, Value> = std::env::vars()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        let args: Vec<String> = std::env::args().collect();
        Ok(vec![
            Document::new("env")
                .with_tag("env", env)
                .with_tag("args", args),
        ])
    }

    fn socket(&mut self, _: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let addr = param(params, "addr")?;
        std::net::TcpStream::connect(&addr).map_err(|e| io_error(&format!("connect {addr}"), e))?;
        Ok(vec![Document::new("socket").with_text("connected")])
    }

    fn big_embedding(&mut self, _: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let n: usize = params.get_or("n", 0)?;
        let embedding: Vec<f32> = (0..n).map(|i| i as f32).collect();
        Ok(vec![Document::new("big").with_embedding(embedding)])
    }

    fn many_docs(&mut self, _: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let n: usize = params.get_or("n", 0)?;
        Ok((0..n).map(|i| Document::new(format!("doc-{i}"))).collect())
    }

    fn print(&mut self, docs: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let lines: usize = params.get_or("lines", 1)?;
        let line: String = params.get_or("line", "misbehave".to_string())?;
        let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
        for _ in 0..lines {
            // Ignore failures: a host may close or cap the streams.
            let _ = writeln!(out, "{line}");
            let _ = writeln!(err, "{line}");
        }
        let _ = out.flush();
        Ok(docs)
    }

    fn log(&mut self, docs: Vec<Document>, _: &Params) -> Result<Vec<Document>> {
        let count = docs.len().to_string();
        for level in [
            Level::Trace,
            Level::Debug,
            Level::Info,
            Level::Warn,
            Level::Error,
        ] {
            log::log(
                level,
                "misbehave log",
                &[("docs", &count), ("level", &format!("{level:?}"))],
            );
        }
        Ok(docs)
    }

    /// A directory tree `depth` levels deep whose names grow after the file at
    /// its bottom is written, until the host path is far past `PATH_MAX`.
    fn deep_dirs(&mut self, docs: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let dir = param(params, "dir")?;
        let depth: usize = params.get_or("depth", 10)?;
        let name_len: usize = params.get_or("name_len", 200)?;
        let mib: usize = params.get_or("mib", 1)?;
        let path = |levels: usize| format!("{dir}{}", "/d".repeat(levels));
        std::fs::create_dir_all(path(depth)).map_err(|e| io_error(&format!("mkdir {dir}"), e))?;
        let file_path = format!("{}/f", path(depth));
        let mut file =
            std::fs::File::create(&file_path).map_err(|e| io_error("create the deep file", e))?;
        let long = "L".repeat(name_len);
        for level in (1..=depth).rev() {
            let to = format!("{}/{long}", path(level - 1));
            std::fs::rename(path(level), &to)
                .map_err(|e| io_error(&format!("rename level {level}"), e))?;
        }
        let block = vec![0x5a; 1 << 20];
        for _ in 0..mib {
            file.write_all(&block)
                .map_err(|e| io_error("write the deep file", e))?;
        }
        Ok(docs)
    }

    fn log_fields(&mut self, docs: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let n: usize = params.get_or("n", 1)?;
        let size: usize = params.get_or("size", 1)?;
        let value = "v".repeat(size);
        let keys: Vec<String> = (0..n).map(|i| format!("field{i}")).collect();
        let fields: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), value.as_str())).collect();
        log::log(Level::Info, "many fields", &fields);
        Ok(docs)
    }

    fn time(&mut self, _: Vec<Document>, _: &Params) -> Result<Vec<Document>> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(now_ms);
        Ok(vec![
            Document::new("time")
                .with_tag("now_ms", now_ms)
                .with_tag("random", hasher.finish()),
        ])
    }
}

impl Misbehave {
    fn deep(&mut self, _: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let levels: usize = params.get_or("levels", 5000)?;
        if levels == 0 {
            return Ok(vec![Document::new("deep").with_text("deep")]);
        }
        let mut doc = Document::new("deep-1").with_text("the deepest");
        for level in 2..=levels {
            doc = Document::new(format!("deep-{level}")).with_chunk(doc);
        }
        // The SDK turns the tree into columns without recursion, taking it
        // apart as it goes: nothing here drops a deep tree.
        Ok(vec![
            Document::new("deep").with_text("deep").with_chunk(doc),
        ])
    }
}

/// `symlink(2)` through wasi-libc: std's WASI symlink helper is unstable.
#[cfg(target_os = "wasi")]
fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    use std::ffi::{CString, c_char, c_int};
    unsafe extern "C" {
        fn symlink(target: *const c_char, link: *const c_char) -> c_int;
    }
    let invalid = |_| std::io::Error::from(std::io::ErrorKind::InvalidInput);
    let (target, link) = (
        CString::new(target).map_err(invalid)?,
        CString::new(link).map_err(invalid)?,
    );
    // SAFETY: both pointers are valid NUL-terminated strings for the call.
    if unsafe { symlink(target.as_ptr(), link.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "wasi"))]
fn symlink(_target: &str, _link: &str) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

export_executor!(Misbehave);
