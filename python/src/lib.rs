//! `quiver._quiver`: the native half of the `quiver` Python package.
//!
//! It wraps the Rust smart client (`quiver-client`) — routing, fan-out, failover, hedging,
//! deadlines and watermark tokens — and hands lookup results to Python as raw column
//! buffers (one `bytes` per array, never a Python object per value); the pure-Python half
//! (`quiver/`) turns them into NumPy, Arrow and pandas and gives the API its docstrings.
//!
//! Every blocking call releases the GIL while it waits; the `*_async` methods return
//! asyncio awaitables driven by the same tokio runtime.
//!
//! # Layout
//! - `client.rs`: the `Client` class (construction, lookups, pushes, the registry).
//! - `response.rs`: a lookup's columns as buffers.
//! - `values.rs`: Python values → feature values and keys, checked against the schema.
//! - `errors.rs`: client errors → `quiver.errors` exceptions with quiver's error code.

use pyo3::prelude::*;

/// Rust allocations of this module (Python's own objects use Python's allocator).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod client;
mod errors;
mod response;
mod values;

/// The native module.
#[pymodule]
fn _quiver(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::Client>()?;
    m.add_class::<response::Response>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
