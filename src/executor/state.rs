//! The host state of one instance: everything a guest's imports can reach.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{LogLevel, jina};
use super::output::GuestOutput;
use super::sandbox::Limiter;

/// One per `Store`, so one per instance: instances share nothing.
pub struct ExecutorState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: Limiter,
    pub(super) output: GuestOutput,
}

impl WasiView for ExecutorState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl jina::executor::types::Host for ExecutorState {}

impl jina::executor::log::Host for ExecutorState {
    fn log(&mut self, level: LogLevel, message: String, fields: Vec<(String, String)>) {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.output.log(level, &message, &fields);
    }
}
