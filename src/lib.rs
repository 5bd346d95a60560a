//! portico: a FastCGI / SCGI / CGI multi-protocol gateway, as a library.
//!
//! The binary is a thin wrapper over [`cli::run`]; a program can embed portico the same
//! way and register its own in-process [`backend::Handler`]s (see `examples/embed.rs`).
//! The design is in `ARCHITECTURE.md`; the wire codecs are the `portico-protocols` crate.

pub mod addr;
pub mod backend;
pub mod cli;
pub mod config;
pub mod decode;
pub mod dispatch;
pub mod listen;
pub mod meta;
pub mod model;
pub mod probe;
pub mod procs;
pub mod route;
pub mod rt;
pub mod server;
pub mod stats;
pub mod text;
