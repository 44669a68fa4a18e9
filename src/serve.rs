//! `veto serve`: load everything, refuse to start on anything invalid, then run the Check
//! server and the admin server until SIGTERM.
//!
//! Start-up is all-or-nothing (SPEC §1): the config, every key file and the rules file are
//! read and validated before a listener opens, so veto never serves a half-loaded state.
//! [`load`] is that reading step, one function from a [`Config`] to everything it names;
//! `veto check-config` runs the same function, so it accepts exactly what `serve` would.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::admin::auth::AdminAuth;
use crate::admin::{self, AdminState};
use crate::authz::{Authz, CheckService, Policy};
use crate::config::{Config, Listen, NamedBy};
use crate::jwt::{Verifier, jwks, remote};
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::revocation::RuleTable;
use crate::shutdown::Shutdown;
use crate::sources::file::{FileWatcher, Fingerprint, file_fingerprint};
use crate::sources::persist::StateDir;
use crate::sources::reload;
use crate::state;
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

/// Every file of a config that cannot be used, one per entry, each named by the config
/// field that names it; shown one per line (a rules file may add several lines).
#[derive(Debug, thiserror::Error)]
pub struct LoadError(pub Vec<NamedBy>);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Everything a config names, read and validated: what `serve` starts from, and what
/// `veto check-config` checks, so the two cannot disagree on what is valid.
pub struct Loaded {
    /// Per issuer of the config, in its order.
    pub issuers: Vec<IssuerFiles>,
    /// `revocation.file`, when configured.
    pub rules: Option<RulesFile>,
    /// The pushed rules saved in `revocation.state_dir` by the last run (empty on a first
    /// start or without a `state_dir`).
    pub pushed: RuleTable,
    /// `admin.token_file`, when configured.
    pub admin: Option<AdminAuth>,
}

/// One issuer's key files and, for fetched keys, its HTTP client (which holds `ca_file`).
pub struct IssuerFiles {
    pub key_files: Vec<KeyFileLoaded>,
    pub client: Option<reqwest::Client>,
}

pub struct KeyFileLoaded {
    pub kind: jwks::KeyFile,
    pub file: PathBuf,
    /// Taken before the read, so a change racing the read is still seen by the watcher.
    pub fingerprint: Fingerprint,
    pub loaded: jwks::Loaded,
}

pub struct RulesFile {
    pub file: PathBuf,
    pub fingerprint: Fingerprint,
    pub table: RuleTable,
}

/// Reads every file `config` names: key files, CA files, the rules file, the state file
/// and the admin token. Every file is tried, so the error lists every problem, not the
/// first. Creates nothing: `serve` creates `state_dir` afterwards.
pub fn load(config: &Config) -> Result<Loaded, LoadError> {
    let mut problems = Vec::new();
    let mut issuers = Vec::with_capacity(config.issuers.len());
    for (i, issuer) in config.issuers.iter().enumerate() {
        let mut key_files = Vec::new();
        for (kind, file) in jwks::key_files(issuer) {
            let fingerprint = file_fingerprint(&file);
            match jwks::load_file(kind, &file) {
                Ok(loaded) => key_files.push(KeyFileLoaded {
                    kind,
                    file,
                    fingerprint,
                    loaded,
                }),
                Err(e) => {
                    problems.push(config.named(format_args!("issuers[{i}].{}", kind.field()), e))
                }
            }
        }
        let client = issuer.remote.as_ref().and_then(|remote| {
            // The error names its field (`issuers[0].ca_file`); prefix the config file.
            remote::client(remote, &format!("issuers[{i}]"))
                .map_err(|e| problems.push(NamedBy::new(config.source.display().to_string(), e)))
                .ok()
        });
        issuers.push(IssuerFiles { key_files, client });
    }
    let rules = config.revocation.file.as_ref().and_then(|file| {
        let (fingerprint, table) = reload::read_rules(file, None);
        match table.unwrap_or_else(|| Ok(RuleTable::default())) {
            Ok(table) => Some(RulesFile {
                file: file.clone(),
                fingerprint,
                table,
            }),
            Err(e) => {
                problems.push(config.named("revocation.file", e));
                None
            }
        }
    });
    // A state file that cannot be read stops the start: never a silent start with nothing
    // revoked.
    let pushed = match &config.revocation.state_dir {
        Some(dir) => StateDir::at(dir).load().unwrap_or_else(|e| {
            problems.push(config.named("revocation.state_dir", e));
            RuleTable::default()
        }),
        None => RuleTable::default(),
    };
    let admin = config.admin.token_file.as_ref().and_then(|file| {
        AdminAuth::load(file)
            .map_err(|e| problems.push(config.named("admin.token_file", e)))
            .ok()
    });
    if !problems.is_empty() {
        return Err(LoadError(problems));
    }
    Ok(Loaded {
        issuers,
        rules,
        pushed,
        admin,
    })
}

/// Runs the sidecar until SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), ServeError> {
    let metrics = Arc::new(Metrics::new());
    let readiness = Readiness::default();
    let starting = readiness.block();
    let shutdown = Shutdown::on_signals().map_err(ServeError::Signals)?;
    let mut watcher = FileWatcher::new().map_err(|e| ServeError::Watch(e.to_string()))?;
    // Every file is read and valid before anything listens.
    let loaded = load(&config)?;

    // Keys: files are installed now; fetched keys load in the background, and readiness
    // waits for them.
    let verifier = Arc::new(Verifier::new(&config.issuers, &config.cache));
    for (issuer, files) in config.issuers.iter().zip(loaded.issuers) {
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
            let changes = watcher
                .watch(&file)
                .map_err(|e| ServeError::Watch(e.to_string()))?;
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
                readiness.block(),
            ));
        }
        metrics.keys_loaded(&issuer.issuer, shared.key_count());
        if issuer.remote.is_some() {
            tracing::info!(issuer = %issuer.issuer, "keys will be fetched; not ready until they are");
        } else {
            tracing::info!(issuer = %issuer.issuer, keys = shared.key_count(), "keys loaded");
        }
    }

    // Rules: the file's, and the pushed rules saved by the last run.
    let (file_rules, rules_fp) = match loaded.rules {
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
            tracing::info!(file = %state_dir.file().display(), rules = loaded.pushed.len(), "pushed rules restored");
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
    let (writer, handle) = state::writer(
        file_rules,
        loaded.pushed,
        prune_after,
        metrics.clone(),
        state_dir,
    );
    tokio::spawn(writer.run());
    if let (Some(file), Some(fp)) = (&config.revocation.file, rules_fp) {
        let changes = watcher
            .watch(file)
            .map_err(|e| ServeError::Watch(e.to_string()))?;
        tokio::spawn(reload::follow_rules(
            file.clone(),
            changes,
            fp,
            handle.clone(),
            metrics.clone(),
        ));
    }

    let authz = Arc::new(Authz {
        policy: Policy::from_config(&config),
        verifier,
        snapshot: handle.reader(),
        metrics: metrics.clone(),
    });

    let admin_auth = match (&config.admin.token_file, loaded.admin) {
        (Some(file), Some(auth)) => {
            let changes = watcher
                .watch(file)
                .map_err(|e| ServeError::Watch(e.to_string()))?;
            tokio::spawn(auth.clone().follow(file.clone(), changes));
            auth
        }
        _ => {
            tracing::warn!("admin.token_file is not set: the rules API is read-only");
            AdminAuth::disabled()
        }
    };

    // Listeners bind before readiness flips, so /readyz never says yes to a port that is
    // not open yet.
    let admin_listener = TcpListener::bind(config.admin.listen)
        .await
        .map_err(|source| ServeError::Listen {
            what: "admin.listen",
            addr: config.admin.listen.to_string(),
            source,
        })?;
    let grpc = bind_grpc(&config).await?;
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
            let listener = UnixListener::bind(path).map_err(err)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                path,
                std::fs::Permissions::from_mode(config.grpc.socket_mode),
            )
            .map_err(err)?;
            Ok(Bound::Unix(listener, path.clone()))
        }
    }
}
