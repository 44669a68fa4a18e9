//! veto's one integration-test binary: every capability links into this one executable
//! instead of one binary per file (faster to build, and the harness is compiled once).
//!
//! Each module below is one capability a user can see, tested through the real `veto`
//! binary, and, where a client is involved, a real Envoy in front of an echo app.
//! Shared setup (starting veto, Envoy and the app on free ports, minting tokens) lives in
//! `common/`; a capability module only says what it checks.

// clippy.toml keeps the wall clock and std locks out of veto itself; the tests are not on
// its request path: their fake servers lock, and their tokens are minted at the real time.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

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
