//! Where rules and keys come from, and how changes reach the snapshot writer: `file`
//! watches files (ConfigMap-safe), `reload` turns a changed file into a new rules layer or
//! key set, keeping the last good one when the new content is invalid; `persist` keeps
//! pushed rules durable in `state_dir`.

pub mod file;
pub mod persist;
pub mod reload;
