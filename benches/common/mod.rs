//! What every micro-benchmark shares: short runs, so `cargo bench` finishes in minutes.

use std::time::Duration;

use criterion::Criterion;

/// 20 samples over 2 s after a 0.5 s warm-up: enough to compare the pieces of a Check,
/// short enough to run the whole suite on a 2-core machine.
pub fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}
