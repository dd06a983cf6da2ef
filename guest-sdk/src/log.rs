//! Structured logs into the host's tracing output, tagged with the executor's name.
//!
//! ```no_run
//! use jina_guest_sdk::log;
//!
//! log::info("index loaded");
//! log::log(log::Level::Warn, "slow query", &[("docs", "1000"), ("ms", "250")]);
//! ```
//!
//! Plain `println!`/`eprintln!` reach the host too, but without level or fields.
//! Outside wasm (native unit tests) these functions print to stderr instead.

/// How important a log line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Log `message` with `fields` (key, value) at `level`.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::__bindings::jina::executor::log as wit;
        let level = match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        wit::log(level, message, &fields);
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let mut line = format!("[{level:?}] {message}");
        for (k, v) in fields {
            line.push_str(&format!(" {k}={v}"));
        }
        eprintln!("{line}");
    }
}

/// Log at [`Level::Trace`] without fields.
pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message.as_ref(), &[]);
}

/// Log at [`Level::Debug`] without fields.
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message.as_ref(), &[]);
}

/// Log at [`Level::Info`] without fields.
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message.as_ref(), &[]);
}

/// Log at [`Level::Warn`] without fields.
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message.as_ref(), &[]);
}

/// Log at [`Level::Error`] without fields.
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message.as_ref(), &[]);
}
