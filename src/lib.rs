//! stapsteen: an SSH bastion for management networks.
//!
//! Layers, each using only those below it: `config`, `policy`, `secrets`, `seckey`, `ids`, `net`,
//! `clock`, `rate`, `sync`, `algorithms` at the bottom; `firewall`; `audit`, then `recording`; `upstream`,
//! then `proxy`; `app` (the shared state); `frontdoor`, `console` and `offsite`; `serve`, `cli`
//! and `demo` on top. The public modules are what the binary, the tests and the benchmark use.
#![forbid(unsafe_code)]

pub(crate) mod algorithms;
pub(crate) mod app;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub(crate) mod console;
/// The console's index, for its benchmark (`cargo bench --bench console`).
#[doc(hidden)]
pub use console::index as console_index;
#[cfg(feature = "demo")]
pub mod demo;
pub(crate) mod firewall;
pub(crate) mod frontdoor;
#[doc(hidden)]
pub mod fuzzing;
pub mod ids;
pub(crate) mod net;
pub(crate) mod offsite;
pub(crate) mod policy;
pub mod proxy;
pub(crate) mod rate;
pub mod recording;
pub mod seckey;
pub mod secrets;
pub(crate) mod serve;
#[cfg(feature = "demo")]
pub mod softkey;
pub(crate) mod sync;
pub(crate) mod upstream;
