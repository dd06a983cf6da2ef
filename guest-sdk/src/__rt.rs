//! What `export_executor!` expands to calls into: the generic glue between the
//! generated `Guest` trait and an [`Executor`]. Not a public API.

use std::any::Any;
use std::cell::RefCell;

use crate::__bindings::jina::executor::types as wit;
use crate::{Config, Error, Executor, Params, Result, Routes, wire};

pub use wit::{Batch, EndpointInfo};

/// The result type of the generated `Guest` methods.
pub type WireResult<T> = std::result::Result<T, wit::Error>;

/// The live executor with its routes, built once after `init`.
struct Instance<E> {
    executor: E,
    routes: Routes<E>,
}

thread_local! {
    // One component instance runs one executor on one thread; `Any` because this
    // static cannot be generic. Set by `init`, cleared by `close`.
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// Run `f` on the live instance, or fail with `"<call> called before init"`.
fn with_instance<E: Executor, T>(
    call: &str,
    f: impl FnOnce(&mut Instance<E>) -> Result<T>,
) -> Result<T> {
    INSTANCE.with(|cell| {
        let mut slot = cell.borrow_mut();
        match slot
            .as_mut()
            .and_then(|any| any.downcast_mut::<Instance<E>>())
        {
            Some(instance) => f(instance),
            None => Err(Error::internal(format!("{call} called before init"))),
        }
    })
}

/// What `E` declares (contract 0.2.0's `endpoints`): its routes, built
/// without an instance (the host may ask before `init`).
pub fn endpoints<E: Executor>() -> Vec<wit::EndpointInfo> {
    E::routes()
        .declared()
        .into_iter()
        .map(|(name, doc)| wit::EndpointInfo { name, doc })
        .collect()
}

pub fn init<E: Executor>(config: String) -> WireResult<()> {
    let result = (|| {
        if INSTANCE.with(|cell| cell.borrow().is_some()) {
            return Err(Error::internal("init called twice"));
        }
        let config = Config::parse(&config)?;
        let executor = E::init(config)?;
        let instance: Box<dyn Any> = Box::new(Instance {
            executor,
            routes: E::routes(),
        });
        INSTANCE.with(|cell| *cell.borrow_mut() = Some(instance));
        Ok(())
    })();
    result.map_err(Into::into)
}

pub fn handle<E: Executor>(
    endpoint: String,
    batch: wit::Batch,
    parameters: String,
) -> WireResult<wit::Batch> {
    let result = with_instance::<E, _>("handle", |instance| {
        let Some(handler) = instance.routes.find(&endpoint) else {
            // No handler and no default: pass through untouched, undecoded.
            return Ok(batch);
        };
        let params = Params::parse(&parameters)?;
        let docs = wire::from_batch(batch)?;
        let docs = handler(&mut instance.executor, docs, &params)?;
        Ok(wire::into_batch(docs))
    });
    result.map_err(Into::into)
}

pub fn dump<E: Executor>() -> WireResult<()> {
    with_instance::<E, _>("dump", |instance| instance.executor.dump()).map_err(Into::into)
}

pub fn close<E: Executor>() {
    let instance = INSTANCE.with(|cell| cell.borrow_mut().take());
    if let Some(mut instance) = instance.and_then(|any| any.downcast::<Instance<E>>().ok()) {
        instance.executor.close();
    }
}
