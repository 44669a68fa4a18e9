//! SIGTERM/SIGINT handling shared by the servers: each holds a [`Shutdown`] and stops
//! accepting when it fires, finishing the requests in flight (graceful shutdown).

use tokio::sync::watch;

/// Fires once, when the process is asked to stop.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Listens for SIGTERM (what Kubernetes sends) and SIGINT (Ctrl-C).
    pub fn on_signals() -> std::io::Result<Shutdown> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received; draining"),
                _ = int.recv() => tracing::info!("SIGINT received; draining"),
            }
            let _ = tx.send(true);
        });
        Ok(Shutdown(rx))
    }

    /// Resolves when shutdown begins.
    pub async fn wait(mut self) {
        // An error means the sender is gone, which only happens once it has fired.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
