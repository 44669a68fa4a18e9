//! `veto serve`: wiring. [`load`](crate::load::load) reads and validates every file the config
//! names (refusing to start on anything invalid, SPEC §1); this module binds the listeners,
//! starts one task per watched file and per fetched key set, hands the rules to the one
//! snapshot writer, and runs the Check server and the admin server until SIGTERM. It
//! decides nothing itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::admin::auth::AdminAuth;
use crate::admin::{self, AdminState};
use crate::authz::{Authz, CheckService, Policy};
use crate::config::{Config, Listen};
use crate::jwt::{Verifier, jwks, remote};
use crate::load::{self, IssuerFiles, KeyFileLoaded, LoadError};
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::revocation::RuleTable;
use crate::shutdown::Shutdown;
use crate::sources::file::FileWatcher;
use crate::sources::persist::StateDir;
use crate::sources::reload;
use crate::state::{self, StateHandle};
use envoy_types::ext_authz::v3::pb::AuthorizationServer;

/// Why `serve` could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Files the config names that cannot be used, each with the field that names it.
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{what} {addr}: {source}")]
    Listen {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot watch files: {0}")]
    Watch(String),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("admin server failed: {0}")]
    Admin(std::io::Error),
}

impl From<crate::sources::file::WatchError> for ServeError {
    fn from(e: crate::sources::file::WatchError) -> Self {
        ServeError::Watch(e.to_string())
    }
}

/// Runs the sidecar until SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), ServeError> {
    let metrics = Arc::new(Metrics::new());
    let readiness = Readiness::default();
    let starting = readiness.block("start-up");
    let mut watcher = FileWatcher::new().map_err(|e| ServeError::Watch(e.to_string()))?;
    // Every file is read and valid before anything listens.
    let loaded = load::load(&config)?;
    // Then the listeners, before any task starts: the Unix socket is created under a
    // process-wide umask (see `bind_unix`), so nothing else may be creating files; and a
    // port that is taken stops the start before anything runs. /readyz cannot say yes
    // before either is open.
    let grpc = bind_grpc(&config).await?;
    let admin_listener = TcpListener::bind(config.admin.listen)
        .await
        .map_err(|source| ServeError::Listen {
            what: "admin.listen",
            addr: config.admin.listen.to_string(),
            source,
        })?;
    let shutdown = Shutdown::on_signals().map_err(ServeError::Signals)?;

    let verifier = start_keys(&config, loaded.issuers, &mut watcher, &metrics, &readiness)?;
    let (handle, prune_after) =
        start_rules(&config, loaded.rules, loaded.pushed, &mut watcher, &metrics)?;
    let authz = Arc::new(Authz {
        policy: Policy::from_config(&config),
        verifier,
        snapshot: handle.reader(),
        metrics: metrics.clone(),
    });
    let admin_auth = match (&config.admin.token_file, loaded.admin) {
        (Some(file), Some(auth)) => {
            let changes = watcher.watch(file)?;
            tokio::spawn(auth.clone().follow(file.clone(), changes));
            auth
        }
        _ => {
            tracing::warn!("admin.token_file is not set: the rules API is read-only");
            AdminAuth::disabled()
        }
    };

    let admin_state = AdminState {
        readiness: readiness.clone(),
        metrics: metrics.clone(),
        auth: admin_auth,
        state: handle.clone(),
        authz: authz.clone(),
        max_token_lifetime: prune_after.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
    };
    let admin_shutdown = shutdown.clone();
    let admin_server = tokio::spawn(async move {
        axum::serve(admin_listener, admin::router(admin_state))
            .with_graceful_shutdown(admin_shutdown.wait())
            .await
    });

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AuthorizationServer<CheckService>>()
        .await;
    let router = Server::builder()
        .add_service(health_service)
        .add_service(AuthorizationServer::new(CheckService::new(authz)));
    drop(starting);
    tracing::info!(
        grpc = %config.grpc.listen,
        admin = %config.admin.listen,
        "veto is serving"
    );
    let served = match grpc {
        Bound::Tcp(l) => {
            // Nagle's algorithm with delayed ACKs adds up to 40 ms to a small response on a
            // kept-alive connection; tonic sets TCP_NODELAY only on sockets it binds itself.
            let incoming = TcpIncoming::from(l).with_nodelay(Some(true));
            router
                .serve_with_incoming_shutdown(incoming, shutdown.clone().wait())
                .await
        }
        Bound::Unix(l, path) => {
            let out = router
                .serve_with_incoming_shutdown(UnixListenerStream::new(l), shutdown.clone().wait())
                .await;
            let _ = std::fs::remove_file(&path);
            out
        }
    };
    served?;
    match admin_server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(ServeError::Admin(e)),
        Err(e) => return Err(ServeError::Admin(std::io::Error::other(e))),
    }
    // Keep the watcher alive until the servers are done.
    drop(watcher);
    tracing::info!("veto stopped");
    Ok(())
}

/// Installs the keys read from files, follows each key file, and starts fetching the keys
/// of `jwks_uri`/discovery issuers in the background; readiness waits for those.
fn start_keys(
    config: &Config,
    loaded: Vec<IssuerFiles>,
    watcher: &mut FileWatcher,
    metrics: &Arc<Metrics>,
    readiness: &Readiness,
) -> Result<Arc<Verifier>, ServeError> {
    let verifier = Arc::new(Verifier::new(&config.issuers, &config.cache));
    for (issuer, files) in config.issuers.iter().zip(loaded) {
        let Some(shared) = verifier.issuer(&issuer.issuer).cloned() else {
            continue;
        };
        for key_file in files.key_files {
            let KeyFileLoaded {
                kind,
                file,
                fingerprint,
                loaded,
            } = key_file;
            for skipped in &loaded.skipped {
                tracing::warn!(issuer = %issuer.issuer, file = %file.display(), key = %skipped, "key skipped");
            }
            jwks::install(&shared, kind, loaded.keys);
            let changes = watcher.watch(&file)?;
            tokio::spawn(reload::follow_key_file(
                shared.clone(),
                kind,
                file,
                changes,
                fingerprint,
                metrics.clone(),
            ));
        }
        if let Some(client) = files.client {
            tokio::spawn(remote::run(
                shared.clone(),
                client,
                metrics.clone(),
                readiness.block(format!("keys of {}", issuer.issuer)),
            ));
        }
        metrics.keys_loaded(&issuer.issuer, shared.key_count());
        if issuer.remote.is_some() {
            tracing::info!(issuer = %issuer.issuer, "keys will be fetched; not ready until they are");
        } else {
            tracing::info!(issuer = %issuer.issuer, keys = shared.key_count(), "keys loaded");
        }
    }
    Ok(verifier)
}

/// Starts the snapshot writer with the rules file's rules and the pushed rules saved by
/// the last run, and follows the rules file. Returns the writer's handle and how long
/// after its cutoff a rule can go (`max_token_lifetime` plus the largest leeway).
fn start_rules(
    config: &Config,
    file: Option<load::RulesFile>,
    pushed: RuleTable,
    watcher: &mut FileWatcher,
    metrics: &Arc<Metrics>,
) -> Result<(StateHandle, Option<std::time::Duration>), ServeError> {
    let (file_rules, rules_fp) = match file {
        Some(rules) => {
            tracing::info!(file = %rules.file.display(), rules = rules.table.len(), "rules loaded");
            reload::trim_heap();
            (rules.table, Some(rules.fingerprint))
        }
        None => (RuleTable::default(), None),
    };
    let state_dir = match &config.revocation.state_dir {
        Some(dir) => {
            let state_dir = StateDir::open(dir)
                .map_err(|e| LoadError(vec![config.named("revocation.state_dir", e)]))?;
            tracing::info!(file = %state_dir.file().display(), rules = pushed.len(), "pushed rules restored");
            Some(state_dir)
        }
        None => None,
    };
    // A cutoff can go once every token it could catch is past max_token_lifetime, plus the
    // clock skew any issuer is allowed.
    let prune_after = config.revocation.max_token_lifetime.map(|l| {
        let leeway = config.issuers.iter().map(|i| i.leeway).max();
        l.saturating_add(leeway.unwrap_or_default())
    });
    let (writer, handle) =
        state::writer(file_rules, pushed, prune_after, metrics.clone(), state_dir);
    tokio::spawn(writer.run());
    if let (Some(file), Some(fp)) = (&config.revocation.file, rules_fp) {
        let changes = watcher.watch(file)?;
        tokio::spawn(reload::follow_rules(
            file.clone(),
            changes,
            fp,
            config.issuers.iter().map(|i| i.issuer.clone()).collect(),
            handle.clone(),
            metrics.clone(),
        ));
    }
    Ok((handle, prune_after))
}

enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

async fn bind_grpc(config: &Config) -> Result<Bound, ServeError> {
    let err = |source| ServeError::Listen {
        what: "grpc.listen",
        addr: config.grpc.listen.to_string(),
        source,
    };
    match &config.grpc.listen {
        Listen::Tcp(addr) => Ok(Bound::Tcp(TcpListener::bind(addr).await.map_err(err)?)),
        Listen::Unix(path) => {
            // A socket file left by a crash would make bind fail with "address in use";
            // only a socket is removed, never a regular file someone put there.
            use std::os::unix::fs::FileTypeExt;
            if let Ok(meta) = std::fs::symlink_metadata(path)
                && meta.file_type().is_socket()
            {
                std::fs::remove_file(path).map_err(err)?;
            }
            let listener = bind_unix(path, config.grpc.socket_mode).map_err(err)?;
            Ok(Bound::Unix(listener, path.clone()))
        }
    }
}

/// Binds a Unix socket that has permissions `mode` from the moment it exists: a chmod
/// after `bind` would leave a window in which the socket has the default permissions and
/// anyone the umask allows can connect. `bind` creates the socket file with 0777 minus
/// the umask, so the umask is set to what `mode` forbids for the call. The umask is
/// process-wide; `run` binds before any task starts, so no other file is being created
/// meanwhile.
fn bind_unix(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    let forbidden = (!mode & 0o777) as libc::mode_t;
    // SAFETY: umask only swaps the process's file-creation mask; it has no failure mode
    // and touches no memory.
    let previous = unsafe { libc::umask(forbidden) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the mask that was in force.
    unsafe { libc::umask(previous) };
    bound
}
