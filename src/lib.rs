//! veto: revocable JWTs for Envoy, as an ext_authz v3 gRPC sidecar.
//!
//! Where a Check goes: Envoy calls `Authorization/Check` ([`authz`]); [`token`] finds the
//! bearer token in the forwarded headers; [`jwt`] verifies it against the issuer's current
//! keys; the [`revocation`] snapshot says whether a rule revokes it; [`decision`] turns the
//! outcome into the `CheckResponse` Envoy acts on. No lock and no I/O on that path: keys and
//! snapshot are read through `arc-swap`.
//!
//! Who owns what:
//! - [`config`]: the YAML config, validated once into typed values.
//! - [`revocation`]: rules (`parse` reads files and API bodies), the per-selector tables and
//!   the [`revocation::Snapshot`] that combines the file and pushed layers.
//! - [`state`]: the single writer that builds and publishes snapshots (reloads, pushes,
//!   deletes and expiry all go through it).
//! - [`sources`]: file watching (ConfigMap-safe) and the reload loops for rules and keys.
//! - [`admin`]: the HTTP admin server (health, readiness, metrics).
//! - [`load`]: one step from a [`config::Config`] to every file it names, read and
//!   validated; `veto serve` starts from it and `veto check-config` runs it.
//! - [`metrics`], [`readiness`], [`shutdown`], [`clock`]: cross-cutting pieces, each in one
//!   place ([`clock`] is the only reader of the wall clock; everything else is given `now`).
//! - [`serve`] wires it all together for `veto serve`; [`check`] and [`jwt::mint`] back the
//!   other commands; [`cli`] is the command line.

pub mod admin;
pub mod authz;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod decision;
pub mod jwt;
pub mod load;
pub mod metrics;
pub mod readiness;
pub mod revocation;
pub mod serve;
pub mod shutdown;
pub mod sources;
pub mod state;
pub mod token;
