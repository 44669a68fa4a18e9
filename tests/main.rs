//! veto's one integration-test binary: every capability links into this one executable
//! instead of one binary per file (faster to build, and the harness is compiled once).
//!
//! Each module below is one capability a user can see, tested through the real `veto`
//! binary, and, where a client is involved, a real Envoy in front of an echo app.
//! Shared setup (starting veto, Envoy and the app on free ports, minting tokens) lives in
//! `common/`; a capability module only says what it checks.

// Each capability module uses a different part of the harness (and its re-exports); what
// one of them leaves unused is not dead.
#[allow(dead_code, unused_imports)]
mod common;

mod admin;
mod cache;
mod cli;
mod decisions;
mod grpc;
mod lifecycle;
mod manifests;
mod readme;
mod reload;
mod remote_keys;
