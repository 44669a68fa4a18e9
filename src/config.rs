//! The YAML config of SPEC §2: raw serde structs in, a validated [`Config`] out.
//!
//! Parse, don't validate: after [`Config::load`] every path is absolute, every duration a
//! [`Duration`], every algorithm a [`jsonwebtoken::Algorithm`], and the rest of veto never
//! re-checks a string from this file. Errors name the file and the field.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::decision::Reason;

/// Default clock skew allowed on `exp`, `nbf` and `iat` (SPEC §2).
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// A config file that cannot be used, with the file and field named.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: PathBuf, message: String },
    /// Every invalid field found, one per line (`CONFIG: FIELD: what was expected`), so
    /// `veto check-config` can list them all at once.
    #[error("{}", FieldErrors(file, errors))]
    Invalid {
        file: PathBuf,
        errors: Vec<FieldError>,
    },
}

/// One invalid field of a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

struct FieldErrors<'a>(&'a Path, &'a [FieldError]);

impl std::fmt::Display for FieldErrors<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.1.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {}: {}", self.0.display(), e.field, e.message)?;
        }
        Ok(())
    }
}

/// A problem in a file the config names, prefixed with the config field that names it
/// (`issuers[0].jwks_file: /etc/veto/jwks.json: not a JSON JWK Set ...`), so the operator
/// sees both which file is wrong and where the config points at it. A source of several
/// lines (every invalid rule of a rules file) gets the prefix on each line.
#[derive(Debug, thiserror::Error)]
pub struct NamedBy {
    pub field: String,
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl std::fmt::Display for NamedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, line) in self.source.to_string().lines().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {line}", self.field)?;
        }
        Ok(())
    }
}

impl NamedBy {
    pub fn new(
        field: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        NamedBy {
            field: field.into(),
            source: Box::new(source),
        }
    }
}

/// Where the Check service listens: TCP, or a Unix socket (`unix:/run/veto/veto.sock`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "{addr}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The validated configuration veto runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this config came from; relative paths inside it were resolved against its
    /// directory, so `veto serve` behaves the same whatever the working directory.
    pub source: PathBuf,
    pub grpc: GrpcConfig,
    pub admin: AdminConfig,
    pub issuers: Vec<IssuerConfig>,
    pub token: TokenConfig,
    pub revocation: RevocationConfig,
    pub forward: ForwardConfig,
    pub cache: CacheConfig,
    pub log: LogConfig,
}

/// What veto logs, beyond the `VETO_LOG` filter.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The level of the "request denied" line, per reason (indexed by `Reason as usize`).
    /// Behind a public load balancer every anonymous request is a `missing_token` denial:
    /// an operator can move those lines to `debug` and keep the rest. The metrics count
    /// every denial whatever its level.
    denials: [LogLevel; Reason::ALL.len()],
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            denials: [LogLevel::Info; Reason::ALL.len()],
        }
    }
}

impl LogConfig {
    /// The level a denial for `reason` is logged at.
    pub fn denial(&self, reason: Reason) -> LogLevel {
        self.denials[reason as usize]
    }
}

/// A log level, or `Off` for a line never written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn from_name(name: &str) -> Option<LogLevel> {
        Some(match name.to_ascii_lowercase().as_str() {
            "off" => LogLevel::Off,
            "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => return None,
        })
    }
}

/// The verification cache (see `jwt/cache.rs`).
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Slots; 0 turns the cache off.
    pub max_entries: usize,
    /// Approximate memory budget.
    pub max_bytes: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: 16_384,
            max_bytes: 32 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcConfig {
    pub listen: Listen,
    /// Permissions of the Unix socket, so an Envoy running as another user of the pod's
    /// `fsGroup` can connect.
    pub socket_mode: u32,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct IssuerConfig {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks_file: Option<PathBuf>,
    /// Keys fetched over HTTP(S): a JWKS URL, or OpenID discovery.
    pub remote: Option<RemoteKeys>,
    pub hmac_secret_file: Option<PathBuf>,
    /// Empty means "every algorithm the keys allow".
    pub algorithms: Vec<Algorithm>,
    pub leeway: Duration,
}

/// Where and how an issuer's keys are fetched (`jwks_uri` or `discovery: true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteKeys {
    pub source: KeySource,
    /// How often the keys are fetched again; a `Cache-Control: max-age` overrides it within
    /// bounds.
    pub refresh_interval: Duration,
    /// A private CA (PEM) trusted in addition to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Limit on each HTTP request.
    pub fetch_timeout: Duration,
    /// A token with an unknown `kid` triggers a refetch at most this often, so a flood of
    /// forged `kid`s cannot hammer the identity provider.
    pub min_refetch_interval: Duration,
    /// Accept a discovery document's `http://` `jwks_uri` from an `https://` issuer (keys in
    /// cleartext); off by default.
    pub allow_insecure_http: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    JwksUri(String),
    /// `<issuer>/.well-known/openid-configuration`, then its `jwks_uri`.
    Discovery,
}

#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// Lower-cased, as Envoy sends header names.
    pub header: String,
}

#[derive(Debug, Clone)]
pub struct RevocationConfig {
    pub file: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub session_claim: String,
    pub max_token_lifetime: Option<Duration>,
}

#[derive(Debug, Clone, Default)]
pub struct ForwardConfig {
    /// claim name -> header name (lower-cased).
    pub claims_to_headers: BTreeMap<String, String>,
}

// ---- raw file shape -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    grpc: RawGrpc,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    issuers: Vec<RawIssuer>,
    #[serde(default)]
    token: RawToken,
    #[serde(default)]
    revocation: RawRevocation,
    #[serde(default)]
    forward: RawForward,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    log: RawLog,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    /// reason -> level
    #[serde(default)]
    denials: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCache {
    max_entries: Option<usize>,
    max_bytes: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGrpc {
    listen: Option<String>,
    #[serde(default, deserialize_with = "written_text")]
    socket_mode: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
    token_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    issuer: String,
    #[serde(default)]
    audiences: Vec<String>,
    jwks_file: Option<PathBuf>,
    jwks_uri: Option<String>,
    #[serde(default)]
    discovery: bool,
    refresh_interval: Option<RawScalar>,
    ca_file: Option<PathBuf>,
    fetch_timeout: Option<RawScalar>,
    min_refetch_interval: Option<RawScalar>,
    #[serde(default)]
    allow_insecure_http: bool,
    hmac_secret_file: Option<PathBuf>,
    #[serde(default)]
    algorithms: Vec<String>,
    leeway_seconds: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawToken {
    header: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRevocation {
    file: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    session_claim: Option<String>,
    max_token_lifetime: Option<RawScalar>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawForward {
    #[serde(default)]
    claims_to_headers: BTreeMap<String, String>,
}

/// A scalar's text exactly as the file writes it, quoted or not, before YAML gives it a
/// type: `0660`, `0o660`, `660` and `"0660"` arrive as those characters. For a field whose
/// digits mean something other than YAML's number would (a file mode is octal; YAML reads
/// `0o660` as 432 and `660` as 660).
fn written_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a file mode in octal digits, e.g. \"0660\"")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
    }
    d.deserialize_str(Text).map(Some)
}

/// A YAML scalar that may be written as a number or a string (`24h` or `86400`).
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum RawScalar {
    Int(u64),
    Str(String),
}

impl Config {
    /// Wraps an error in a file this config names: `CONFIG: FIELD: the error`.
    pub fn named(
        &self,
        field: impl std::fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> NamedBy {
        NamedBy::new(format!("{}: {field}", self.source.display()), source)
    }

    /// Reads and validates a config file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        Config::load_under(file, None)
    }

    /// As [`Config::load`], with every absolute path of the config resolved under `root`
    /// when one is given: `veto check-config --root DIR` validates a config written for a
    /// pod (`/etc/veto/keys/jwks.json`) against a copy of its files in `DIR`.
    pub fn load_under(file: &Path, root: Option<&Path>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Config::parse_under(&text, file, root)
    }

    /// Validates config text; `file` names it in errors and anchors relative paths.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        Config::parse_under(text, file, None)
    }

    /// As [`Config::parse`], resolving absolute paths under `root` (see
    /// [`Config::load_under`]).
    pub fn parse_under(
        text: &str,
        file: &Path,
        root: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = yaml_serde::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_path_buf(),
            message: e.to_string(),
        })?;
        // Absolute, so that file watching (which sees absolute paths) recognises the files
        // it watches even when veto was started with `--config config.yaml`.
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let base = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = absolute(base);
        let root = root.map(absolute);
        let fields = Fields {
            file,
            base: &base,
            root: root.as_deref(),
            errors: RefCell::default(),
        };
        fields.build(raw)
    }
}

/// Validation context: the file (for errors), its directory (for relative paths), the root
/// absolute paths are moved under (if any), and the errors found so far. Every field is
/// checked even after one fails, so the user sees every mistake at once; a field that fails
/// takes its default meanwhile, and the config built from those is thrown away.
struct Fields<'a> {
    file: &'a Path,
    base: &'a Path,
    root: Option<&'a Path>,
    errors: RefCell<Vec<FieldError>>,
}

impl Fields<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.borrow_mut().push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// `value`, or an error recorded for `field` when there is none.
    fn check<T>(&self, value: Option<T>, field: &str, message: &str) -> Option<T> {
        if value.is_none() {
            self.err(field, message);
        }
        value
    }

    fn error_count(&self) -> usize {
        self.errors.borrow().len()
    }

    fn path(&self, p: PathBuf) -> PathBuf {
        if !p.is_absolute() {
            return self.base.join(p);
        }
        match self.root {
            // `join` with an absolute path would replace the root: join what follows `/`.
            Some(root) => root.join(p.strip_prefix("/").unwrap_or(&p)),
            None => p,
        }
    }

    fn build(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let grpc_listen = raw.grpc.listen.as_deref().unwrap_or("127.0.0.1:9191");
        let listen = self
            .check(
                parse_listen(grpc_listen),
                "grpc.listen",
                "expected HOST:PORT or unix:/path/to.sock",
            )
            .unwrap_or(Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 9191))));
        let socket_mode = match raw.grpc.socket_mode {
            None => 0o660,
            Some(written) => match octal_mode(&written) {
                Some(mode) => mode,
                None => {
                    self.err(
                        "grpc.socket_mode",
                        format!(
                            "`{written}` is not a file mode: write octal digits as chmod takes them, up to 777, e.g. \"0660\" (0660, 660 and 0o660 mean the same)"
                        ),
                    );
                    0o660
                }
            },
        };
        let admin_listen = raw.admin.listen.as_deref().unwrap_or("127.0.0.1:9192");
        let admin = AdminConfig {
            listen: self
                .check(
                    admin_listen.parse().ok(),
                    "admin.listen",
                    "expected HOST:PORT, e.g. 127.0.0.1:9192",
                )
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9192))),
            token_file: raw.admin.token_file.map(|p| self.path(p)),
        };

        if raw.issuers.is_empty() {
            self.err("issuers", "at least one issuer is required");
        }
        let mut issuers = Vec::with_capacity(raw.issuers.len());
        for (i, ri) in raw.issuers.into_iter().enumerate() {
            let Some(issuer) = self.issuer(i, ri) else {
                continue;
            };
            if issuers
                .iter()
                .any(|o: &IssuerConfig| o.issuer == issuer.issuer)
            {
                self.err(
                    format!("issuers[{i}].issuer"),
                    format!("`{}` is listed twice", issuer.issuer),
                );
                continue;
            }
            issuers.push(issuer);
        }

        let header = raw
            .token
            .header
            .unwrap_or_else(|| "authorization".to_string())
            .to_ascii_lowercase();
        if !is_header_name(&header) {
            self.err("token.header", "not a valid HTTP header name");
        }

        let session_claim = raw.revocation.session_claim.unwrap_or_else(|| "jti".into());
        if session_claim.is_empty() {
            self.err("revocation.session_claim", "must not be empty");
        }
        let max_token_lifetime = raw.revocation.max_token_lifetime.and_then(|s| {
            let d = self.duration("revocation.max_token_lifetime", s)?;
            if d.is_zero() {
                self.err(
                    "revocation.max_token_lifetime",
                    "must be longer than zero (leave it out to keep cutoff rules forever)",
                );
                return None;
            }
            Some(d)
        });
        let revocation = RevocationConfig {
            file: raw.revocation.file.map(|p| self.path(p)),
            state_dir: raw.revocation.state_dir.map(|p| self.path(p)),
            session_claim,
            max_token_lifetime,
        };

        let mut claims_to_headers = BTreeMap::new();
        for (claim, header) in raw.forward.claims_to_headers {
            let header = header.to_ascii_lowercase();
            if !is_header_name(&header) || header.starts_with(':') {
                self.err(
                    format!("forward.claims_to_headers.{claim}"),
                    format!("`{header}` is not a valid HTTP header name"),
                );
            } else if claims_to_headers.values().any(|h| *h == header) {
                self.err(
                    format!("forward.claims_to_headers.{claim}"),
                    format!("header `{header}` is already set from another claim"),
                );
            } else {
                claims_to_headers.insert(claim, header);
            }
        }

        let log = self.log(raw.log);

        let errors = self.errors.take();
        if !errors.is_empty() {
            return Err(ConfigError::Invalid {
                file: self.file.to_path_buf(),
                errors,
            });
        }
        Ok(Config {
            source: self.file.to_path_buf(),
            grpc: GrpcConfig {
                listen,
                socket_mode,
            },
            admin,
            issuers,
            token: TokenConfig { header },
            revocation,
            forward: ForwardConfig { claims_to_headers },
            cache: CacheConfig {
                max_entries: raw
                    .cache
                    .max_entries
                    .unwrap_or(CacheConfig::default().max_entries),
                max_bytes: raw
                    .cache
                    .max_bytes
                    .unwrap_or(CacheConfig::default().max_bytes),
            },
            log,
        })
    }

    /// `log.denials`: a level per denial reason; the rest stay at their default.
    fn log(&self, raw: RawLog) -> LogConfig {
        let mut log = LogConfig::default();
        for (reason, level) in raw.denials {
            let field = format!("log.denials.{reason}");
            let known = Reason::ALL.into_iter().find(|r| r.as_str() == reason);
            match (known, LogLevel::from_name(&level)) {
                (None, _) => {
                    let names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
                    self.err(
                        field,
                        format!(
                            "`{reason}` is not a denial reason (expected one of {})",
                            names.join(", ")
                        ),
                    );
                }
                (Some(_), None) => self.err(
                    field,
                    format!(
                        "`{level}` is not a level (expected off, error, warn, info, debug or trace)"
                    ),
                ),
                (Some(reason), Some(level)) => log.denials[reason as usize] = level,
            }
        }
        log
    }

    /// One issuer, or `None` (with its errors recorded) when any of its fields is invalid.
    fn issuer(&self, i: usize, raw: RawIssuer) -> Option<IssuerConfig> {
        let at = |field: &str| format!("issuers[{i}].{field}");
        let errors_before = self.error_count();
        if raw.issuer.is_empty() {
            self.err(at("issuer"), "must not be empty");
        }
        let remote = self.remote_keys(i, &raw);
        let wants_remote = raw.jwks_uri.is_some() || raw.discovery;
        if raw.jwks_file.is_some() && wants_remote {
            self.err(
                at("jwks_file"),
                "set one of jwks_file, jwks_uri or discovery, not several",
            );
        }
        if raw.jwks_file.is_none() && !wants_remote && raw.hmac_secret_file.is_none() {
            self.err(
                at("jwks_file"),
                "each issuer needs keys: set jwks_file, jwks_uri, discovery: true or hmac_secret_file",
            );
        }
        let mut algorithms = Vec::with_capacity(raw.algorithms.len());
        for (j, name) in raw.algorithms.iter().enumerate() {
            match Algorithm::from_str(name) {
                Ok(alg) => algorithms.push(alg),
                Err(_) => self.err(
                    at(&format!("algorithms[{j}]")),
                    format!(
                        "`{name}` is not a supported algorithm (RS256/384/512, PS256/384/512, ES256/384, EdDSA, HS256/384/512)"
                    ),
                ),
            }
        }
        if raw.audiences.iter().any(String::is_empty) {
            self.err(at("audiences"), "an audience must not be empty");
        }
        if self.error_count() > errors_before {
            return None;
        }
        Some(IssuerConfig {
            issuer: raw.issuer,
            audiences: raw.audiences,
            jwks_file: raw.jwks_file.map(|p| self.path(p)),
            remote,
            hmac_secret_file: raw.hmac_secret_file.map(|p| self.path(p)),
            algorithms,
            leeway: raw
                .leeway_seconds
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_LEEWAY),
        })
    }

    /// `jwks_uri` / `discovery` and the fields that only make sense with them; `None` when
    /// the issuer fetches no keys or (with its errors recorded) when a field is invalid.
    fn remote_keys(&self, i: usize, raw: &RawIssuer) -> Option<RemoteKeys> {
        let at = |field: &str| format!("issuers[{i}].{field}");
        if raw.jwks_uri.is_none() && !raw.discovery {
            for (field, set) in [
                ("refresh_interval", raw.refresh_interval.is_some()),
                ("ca_file", raw.ca_file.is_some()),
                ("fetch_timeout", raw.fetch_timeout.is_some()),
                ("min_refetch_interval", raw.min_refetch_interval.is_some()),
                ("allow_insecure_http", raw.allow_insecure_http),
            ] {
                if set {
                    self.err(at(field), "only applies with jwks_uri or discovery: true");
                }
            }
            return None;
        }
        let source = match (&raw.jwks_uri, raw.discovery) {
            (Some(_), true) => {
                self.err(at("discovery"), "set jwks_uri or discovery: true, not both");
                None
            }
            (Some(uri), _) => self.check(
                is_http_url(uri).then(|| KeySource::JwksUri(uri.clone())),
                &at("jwks_uri"),
                "expected an http:// or https:// URL",
            ),
            (None, _) => self.check(
                is_http_url(&raw.issuer).then_some(KeySource::Discovery),
                &at("discovery"),
                "discovery needs the issuer to be an http:// or https:// URL",
            ),
        };
        let duration = |field: &str, v: &Option<RawScalar>, default: u64, min: u64, max: u64| {
            let value = match v {
                None => Duration::from_secs(default),
                Some(v) => self.duration(&at(field), v.clone())?,
            };
            if value < Duration::from_secs(min) || value > Duration::from_secs(max) {
                self.err(at(field), format!("must be between {min}s and {max}s"));
                return None;
            }
            Some(value)
        };
        let refresh_interval = duration("refresh_interval", &raw.refresh_interval, 300, 1, 86_400);
        let fetch_timeout = duration("fetch_timeout", &raw.fetch_timeout, 5, 1, 300);
        let min_refetch_interval = duration(
            "min_refetch_interval",
            &raw.min_refetch_interval,
            30,
            1,
            86_400,
        );
        Some(RemoteKeys {
            source: source?,
            refresh_interval: refresh_interval?,
            ca_file: raw.ca_file.clone().map(|p| self.path(p)),
            fetch_timeout: fetch_timeout?,
            min_refetch_interval: min_refetch_interval?,
            allow_insecure_http: raw.allow_insecure_http,
        })
    }

    /// A duration, or `None` with the error recorded.
    fn duration(&self, field: &str, raw: RawScalar) -> Option<Duration> {
        match raw {
            RawScalar::Int(n) => Some(Duration::from_secs(n)),
            RawScalar::Str(s) => {
                let d = parse_duration(&s);
                if d.is_none() {
                    self.err(
                        field,
                        format!("`{s}` is not a duration like 30s, 15m, 24h or seconds"),
                    );
                }
                d
            }
        }
    }
}

/// Parses `30s`, `15m`, `24h`, `7d` or plain integer seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// A file mode written in octal digits (`0660`, `660`, or `0o660`), up to 0o777. The
/// digits are read as written, never as the number YAML would make of them: YAML reads
/// `0o660` as 432, whose digits read as octal would give others write permission.
fn octal_mode(written: &str) -> Option<u32> {
    let digits = written.strip_prefix("0o").unwrap_or(written);
    if digits.is_empty() || !digits.bytes().all(|b| matches!(b, b'0'..=b'7')) {
        return None;
    }
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
}

fn parse_listen(s: &str) -> Option<Listen> {
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return None;
        }
        return Some(Listen::Unix(PathBuf::from(path)));
    }
    s.parse().ok().map(Listen::Tcp)
}

/// RFC 9110 token characters, which is what a header name may contain.
fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Config, ConfigError> {
        Config::parse(yaml, Path::new("/etc/veto/config.yaml"))
    }

    #[test]
    fn a_minimal_config_gets_the_documented_defaults() {
        let c = parse("issuers: [{issuer: https://a, jwks_file: jwks.json}]").unwrap();
        assert_eq!(
            c.grpc.listen,
            Listen::Tcp("127.0.0.1:9191".parse().unwrap())
        );
        assert_eq!(c.admin.listen, "127.0.0.1:9192".parse().unwrap());
        assert_eq!(c.token.header, "authorization");
        assert_eq!(c.revocation.session_claim, "jti");
        assert_eq!(c.issuers[0].leeway, Duration::from_secs(30));
        assert_eq!(
            c.issuers[0].jwks_file.as_deref(),
            Some(Path::new("/etc/veto/jwks.json"))
        );
    }

    #[test]
    fn paths_in_a_config_named_relatively_become_absolute() {
        let c = Config::parse(
            "issuers: [{issuer: a, jwks_file: keys/jwks.json}]",
            Path::new("config.yaml"),
        )
        .unwrap();
        let jwks = c.issuers[0].jwks_file.clone().unwrap();
        assert!(jwks.is_absolute(), "{}", jwks.display());
        assert!(jwks.ends_with("keys/jwks.json"));
    }

    #[test]
    fn two_claims_cannot_fill_one_header_and_lifetimes_are_bounded() {
        for bad in [
            "issuers: [{issuer: a, jwks_file: j}]\nforward: {claims_to_headers: {sub: x-a, azp: X-A}}",
            "issuers: [{issuer: a, jwks_file: j}]\nrevocation: {max_token_lifetime: 0}",
            "issuers: [{issuer: https://a, jwks_uri: https://a/k, fetch_timeout: 5000000000000}]",
            "issuers: [{issuer: https://a, jwks_uri: https://a/k, min_refetch_interval: 0}]",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_fields_are_errors_that_name_the_field() {
        let e = parse("issuers: [{issuer: a, jwks_file: j, colour: red}]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn an_unknown_algorithm_is_named_with_its_position() {
        let e = parse("issuers: [{issuer: a, jwks_file: j, algorithms: [RS256, none]}]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("issuers[0].algorithms[1]"), "{e}");
    }

    #[test]
    fn an_issuer_without_keys_is_rejected() {
        let e = parse("issuers: [{issuer: a}]").unwrap_err().to_string();
        assert!(e.contains("issuers[0].jwks_file"), "{e}");
    }

    #[test]
    fn remote_keys_take_a_url_or_discovery_with_defaults() {
        let c = parse("issuers: [{issuer: https://idp, jwks_uri: https://idp/keys}]").unwrap();
        let r = c.issuers[0].remote.clone().unwrap();
        assert_eq!(r.source, KeySource::JwksUri("https://idp/keys".into()));
        assert_eq!(r.refresh_interval, Duration::from_secs(300));
        assert_eq!(r.min_refetch_interval, Duration::from_secs(30));
        let c = parse("issuers: [{issuer: https://idp, discovery: true, refresh_interval: 1m, ca_file: ca.pem}]")
            .unwrap();
        let r = c.issuers[0].remote.clone().unwrap();
        assert_eq!(r.source, KeySource::Discovery);
        assert_eq!(r.ca_file.as_deref(), Some(Path::new("/etc/veto/ca.pem")));
        for bad in [
            "issuers: [{issuer: https://idp, jwks_uri: ftp://x}]",
            "issuers: [{issuer: https://idp, jwks_uri: https://x, discovery: true}]",
            "issuers: [{issuer: https://idp, jwks_uri: https://x, jwks_file: j}]",
            "issuers: [{issuer: idp, discovery: true}]",
            "issuers: [{issuer: https://idp, jwks_file: j, refresh_interval: 1m}]",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_issuer_is_rejected() {
        assert!(parse("grpc: {listen: 127.0.0.1:1}").is_err());
    }

    #[test]
    fn unix_listeners_and_durations_parse() {
        let c = parse(
            "grpc: {listen: unix:/run/veto/veto.sock, socket_mode: \"0600\"}\n\
             issuers: [{issuer: a, hmac_secret_file: /k}]\n\
             revocation: {max_token_lifetime: 24h}",
        )
        .unwrap();
        assert_eq!(c.grpc.listen, Listen::Unix("/run/veto/veto.sock".into()));
        assert_eq!(c.grpc.socket_mode, 0o600);
        assert_eq!(
            c.revocation.max_token_lifetime,
            Some(Duration::from_secs(86_400))
        );
    }

    #[test]
    fn socket_mode_reads_the_octal_digits_as_written_quoted_or_not() {
        for (written, mode) in [
            ("\"0660\"", 0o660),
            ("0660", 0o660),
            ("660", 0o660),
            ("0o660", 0o660),
            ("\"0o600\"", 0o600),
            ("0600", 0o600),
            ("'0640'", 0o640),
            ("0", 0),
            ("0777", 0o777),
        ] {
            let c = parse(&format!(
                "grpc: {{listen: unix:/run/veto.sock, socket_mode: {written}}}\n\
                 issuers: [{{issuer: a, jwks_file: j}}]"
            ))
            .unwrap_or_else(|e| panic!("socket_mode: {written}: {e}"));
            assert_eq!(c.grpc.socket_mode, mode, "socket_mode: {written}");
        }
    }

    #[test]
    fn a_socket_mode_that_is_not_octal_digits_is_refused_naming_the_field() {
        // 0o660 unquoted is the YAML integer 432; it must never become 0o432 (r-- -wx -w-).
        for written in [
            "0x1B0",
            "0b110",
            "\"rw-rw----\"",
            "0999",
            "1000",
            "-0660",
            "+660",
            "6.6e2",
            "true",
            "0O660",
            "\"\"",
            "0o",
            "[660]",
        ] {
            let e = parse(&format!(
                "grpc: {{listen: unix:/run/veto.sock, socket_mode: {written}}}\n\
                 issuers: [{{issuer: a, jwks_file: j}}]"
            ))
            .err()
            .unwrap_or_else(|| panic!("socket_mode: {written} is accepted"))
            .to_string();
            assert!(
                e.contains("grpc.socket_mode"),
                "socket_mode: {written}: {e}"
            );
        }
    }

    #[test]
    fn every_invalid_field_is_reported_each_on_its_own_line_naming_the_file() {
        let e = parse(
            "grpc: {listen: nowhere}\n\
             admin: {listen: x}\n\
             issuers: [{issuer: a, jwks_file: j, algorithms: [none]}, {issuer: b}]\n\
             revocation: {max_token_lifetime: 1 fortnight}",
        )
        .unwrap_err();
        let text = e.to_string();
        let ConfigError::Invalid { errors, .. } = e else {
            panic!("expected field errors: {text}");
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "grpc.listen",
                "admin.listen",
                "issuers[0].algorithms[0]",
                "issuers[1].jwks_file",
                "revocation.max_token_lifetime"
            ]
        );
        assert_eq!(text.lines().count(), 5, "{text}");
        for line in text.lines() {
            assert!(line.starts_with("/etc/veto/config.yaml: "), "{line}");
        }
    }

    #[test]
    fn a_root_moves_absolute_paths_under_it_and_leaves_relative_ones_to_the_config_dir() {
        let c = Config::parse_under(
            "admin: {token_file: /etc/veto/admin/admin-token}\n\
             issuers: [{issuer: a, jwks_file: /etc/veto/keys/jwks.json, hmac_secret_file: hs.key}]\n\
             revocation: {file: /etc/veto/rules/rules.yaml, state_dir: /var/lib/veto}",
            Path::new("/cfg/veto.yaml"),
            Some(Path::new("/tmp/pod")),
        )
        .unwrap();
        let i = &c.issuers[0];
        assert_eq!(
            i.jwks_file.as_deref(),
            Some(Path::new("/tmp/pod/etc/veto/keys/jwks.json"))
        );
        assert_eq!(
            i.hmac_secret_file.as_deref(),
            Some(Path::new("/cfg/hs.key"))
        );
        assert_eq!(
            c.admin.token_file.as_deref(),
            Some(Path::new("/tmp/pod/etc/veto/admin/admin-token"))
        );
        assert_eq!(
            c.revocation.file.as_deref(),
            Some(Path::new("/tmp/pod/etc/veto/rules/rules.yaml"))
        );
        assert_eq!(
            c.revocation.state_dir.as_deref(),
            Some(Path::new("/tmp/pod/var/lib/veto"))
        );
    }

    #[test]
    fn denials_are_logged_at_info_unless_a_reason_says_otherwise() {
        let c = parse("issuers: [{issuer: a, jwks_file: j}]").unwrap();
        for reason in Reason::ALL {
            assert_eq!(c.log.denial(reason), LogLevel::Info, "{reason}");
        }
        let c = parse(
            "issuers: [{issuer: a, jwks_file: j}]\n\
             log: {denials: {missing_token: debug, revoked: warn, expired: off}}",
        )
        .unwrap();
        assert_eq!(c.log.denial(Reason::MissingToken), LogLevel::Debug);
        assert_eq!(c.log.denial(Reason::Revoked), LogLevel::Warn);
        assert_eq!(c.log.denial(Reason::Expired), LogLevel::Off);
        assert_eq!(c.log.denial(Reason::UnknownKey), LogLevel::Info);
        let e = parse(
            "issuers: [{issuer: a, jwks_file: j}]\n\
             log: {denials: {missing_tokens: debug, revoked: loud}}",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("log.denials.missing_tokens: `missing_tokens` is not a denial reason"),
            "{e}"
        );
        assert!(
            e.contains("log.denials.revoked: `loud` is not a level"),
            "{e}"
        );
    }

    #[test]
    fn durations_accept_units_and_plain_seconds() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1y"), None);
        assert_eq!(parse_duration(""), None);
    }
}
