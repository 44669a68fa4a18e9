//! Keys fetched from the identity provider: `jwks_uri`, or OpenID discovery
//! (`<issuer>/.well-known/openid-configuration`, then its `jwks_uri`), cached and refreshed.
//!
//! One fetcher task per issuer swaps whole key sets into the issuer's `arc-swap`; a Check
//! never waits on the network, except for the one case the issue asks for: a token whose
//! `kid` is unknown may be signed with a key the provider has just rotated in, so it asks
//! for an early refetch and is decided after that fetch completes or times out (then the
//! kid stays unknown: `unknown_key`, since the issuer's other keys are loaded). Such
//! refetches are rate-limited per issuer (`min_refetch_interval`), so a flood of forged
//! `kid`s costs the provider at most one request per interval.
//!
//! A failed fetch keeps the last good keys. Until the first success the issuer is not
//! loaded: `/readyz` says 503 and its tokens are undecidable (gRPC `UNAVAILABLE`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{Notify, watch};

use super::Issuer;
use super::jwks::parse_jwks;
use crate::config::{KeySource, RemoteKeys};
use crate::metrics::Metrics;
use crate::readiness::BlockReady;

/// Largest key document accepted; real JWK Sets are a few kilobytes.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Bounds on a `Cache-Control: max-age`: not so short that veto hammers the provider, not
/// so long that a removed key lingers for days.
const MIN_MAX_AGE: Duration = Duration::from_secs(30);
const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Longest a Check waits for an unknown-kid refetch, below the bundled Envoy configs'
/// 0.5 s ext_authz timeout.
const UNKNOWN_KID_WAIT: Duration = Duration::from_millis(400);

/// What an unknown-kid refetch came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refetched {
    /// A fetch that started after the trigger completed: decide again.
    Done,
    /// A refetch ran less than `min_refetch_interval` ago: the kid stays unknown.
    RateLimited,
    /// The fetch did not finish in time: the kid stays unknown. The issuer's keys are
    /// loaded (an issuer without keys is undecidable before any refetch), so the token is
    /// denied as `unknown_key`: a slow provider must not make a forged kid undecidable.
    TimedOut,
}

/// First retry after a failed fetch; it doubles up to the refresh interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{field}: {message}")]
    Setup { field: String, message: String },
}

/// Why one fetch failed (logged, counted; the last good keys stay).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("GET {url}: {message}")]
    Http { url: String, message: String },
    #[error("{url}: {message}")]
    Document { url: String, message: String },
}

/// The early-refetch channel between Checks and the fetcher of one issuer.
pub struct Refetch {
    min_interval: Duration,
    /// Bounds how long a Check waits for a refetch it triggered.
    wait: Duration,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last accepted trigger, plus one (0: never).
    last_trigger_ms: AtomicU64,
    wake: Notify,
    /// Numbers fetch attempts as they start...
    started: AtomicU64,
    /// The `started` count when the last refetch was triggered: the fetch that answers it
    /// is the next one to complete after that.
    triggered_after: AtomicU64,
    /// ...and publishes the number of the last one to complete, so a Check waits for a
    /// fetch that started after its trigger, not one already in flight with the old keys.
    completed: watch::Sender<u64>,
}

impl Refetch {
    pub fn new(remote: &RemoteKeys) -> Refetch {
        Refetch {
            min_interval: remote.min_refetch_interval,
            // Envoy stops waiting for a Check after its own timeout (0.5 s in our configs);
            // answering just before is better than an answer nobody reads.
            wait: remote.fetch_timeout.min(UNKNOWN_KID_WAIT),
            epoch: Instant::now(),
            last_trigger_ms: AtomicU64::new(0),
            wake: Notify::new(),
            started: AtomicU64::new(0),
            triggered_after: AtomicU64::new(0),
            completed: watch::Sender::new(0),
        }
    }

    /// A token's `kid` was unknown: fetch now, unless a refetch was triggered less than
    /// `min_interval` ago, and wait (briefly) for a fetch that started after the trigger.
    /// Checks that arrive while a triggered fetch is still pending wait for it too, rather
    /// than being denied while the new key is on its way.
    pub async fn unknown_kid(&self) -> Refetched {
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let last = self.last_trigger_ms.load(Ordering::Acquire);
        let min_ms = u64::try_from(self.min_interval.as_millis()).unwrap_or(u64::MAX);
        let mut completed = self.completed.subscribe();
        let target = if last != 0 && now_ms.saturating_sub(last) < min_ms {
            let pending = self.triggered_after.load(Ordering::Acquire);
            if *completed.borrow_and_update() > pending {
                return Refetched::RateLimited;
            }
            pending
        } else {
            // Only one of several concurrent triggers wakes the fetcher; all of them wait for
            // a fetch that starts after this moment.
            let target = self.started.load(Ordering::Acquire);
            if self
                .last_trigger_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.triggered_after.store(target, Ordering::Release);
                self.wake.notify_one();
            }
            target
        };
        match tokio::time::timeout(self.wait, completed.wait_for(|n| *n > target)).await {
            Ok(Ok(_)) => Refetched::Done,
            _ => Refetched::TimedOut,
        }
    }
}

/// Builds the HTTP client of one issuer: rustls, the system roots plus `ca_file`, and the
/// request timeout.
pub fn client(remote: &RemoteKeys, field_prefix: &str) -> Result<reqwest::Client, RemoteError> {
    let mut builder = reqwest::Client::builder()
        .timeout(remote.fetch_timeout)
        .connect_timeout(remote.fetch_timeout)
        .user_agent(concat!("veto/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &remote.ca_file {
        let setup = |message: String| RemoteError::Setup {
            field: format!("{field_prefix}.ca_file"),
            message,
        };
        let pem = std::fs::read(ca).map_err(|e| setup(format!("{}: {e}", ca.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| setup(format!("{}: not PEM certificates: {e}", ca.display())))?;
        if certs.is_empty() {
            return Err(setup(format!("{}: holds no certificate", ca.display())));
        }
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(|e| RemoteError::Setup {
        field: format!("{field_prefix}.jwks_uri"),
        message: format!("cannot build the HTTP client: {e}"),
    })
}

/// Fetches an issuer's keys for the life of the process. `ready` is released after the
/// first successful fetch.
pub async fn run(
    issuer: Arc<Issuer>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    ready: BlockReady,
) {
    let (Some(remote), Some(refetch)) = (issuer.config.remote.clone(), issuer.refetch.as_ref())
    else {
        return;
    };
    let name = issuer.config.issuer.clone();
    let mut ready = Some(ready);
    let mut retry = FIRST_RETRY;
    loop {
        let attempt = refetch.started.fetch_add(1, Ordering::AcqRel) + 1;
        let fetched = fetch(&client, &name, &remote.source, remote.allow_insecure_http).await;
        let next = match fetched {
            Ok(fetched) => {
                for skipped in &fetched.skipped {
                    tracing::warn!(issuer = %name, key = %skipped, "fetched key skipped");
                }
                let count = fetched.keys.len();
                issuer.store_jwks(fetched.keys);
                metrics.keys_loaded(&name, issuer.key_count());
                metrics.jwks_fetch(&name, true);
                tracing::info!(issuer = %name, url = %fetched.url, keys = count, "keys fetched");
                if ready.take().is_some() {
                    tracing::info!(issuer = %name, "issuer ready");
                }
                retry = FIRST_RETRY;
                fetched.max_age.map_or(remote.refresh_interval, |a| {
                    a.clamp(MIN_MAX_AGE, MAX_MAX_AGE)
                })
            }
            Err(error) => {
                metrics.jwks_fetch(&name, false);
                tracing::error!(issuer = %name, %error, "key fetch failed; the last good keys stay in force");
                let wait = retry.min(remote.refresh_interval);
                retry = (retry * 2).min(remote.refresh_interval);
                wait
            }
        };
        refetch.completed.send_replace(attempt);
        tokio::select! {
            () = tokio::time::sleep(next) => {}
            () = refetch.wake.notified() => {}
        }
    }
}

struct Fetched {
    url: String,
    keys: Vec<super::Key>,
    skipped: Vec<String>,
    max_age: Option<Duration>,
}

async fn fetch(
    client: &reqwest::Client,
    issuer: &str,
    source: &KeySource,
    allow_insecure_http: bool,
) -> Result<Fetched, FetchError> {
    let url = match source {
        KeySource::JwksUri(u) => u.clone(),
        KeySource::Discovery => discover(client, issuer, allow_insecure_http).await?,
    };
    let (body, max_age) = get(client, &url).await?;
    let (keys, skipped) = parse_jwks(&body).map_err(|message| FetchError::Document {
        url: url.clone(),
        message,
    })?;
    Ok(Fetched {
        url,
        keys,
        skipped,
        max_age,
    })
}

/// OpenID Connect Discovery 1.0 §4: the provider's `jwks_uri`.
async fn discover(
    client: &reqwest::Client,
    issuer: &str,
    allow_insecure_http: bool,
) -> Result<String, FetchError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let (body, _) = get(client, &url).await?;
    let doc: Value = serde_json::from_slice(&body).map_err(|e| FetchError::Document {
        url: url.clone(),
        message: format!("not JSON: {e}"),
    })?;
    jwks_uri_in(&doc, issuer, allow_insecure_http)
        .map_err(|message| FetchError::Document { url, message })
}

/// The `jwks_uri` of a discovery document for `issuer`, or why veto will not use it.
fn jwks_uri_in(doc: &Value, issuer: &str, allow_insecure_http: bool) -> Result<String, String> {
    // OpenID Connect Discovery 1.0 §4.3: the document's issuer must be exactly the one we
    // asked about, or it is some other provider's configuration. §3 makes `issuer` REQUIRED:
    // a document without one vouches for no issuer at all.
    match doc.get("issuer").and_then(Value::as_str) {
        Some(named) if named == issuer => {}
        Some(named) => {
            return Err(format!(
                "the discovery document is for issuer {named}, not {issuer}"
            ));
        }
        None => return Err("the discovery document has no issuer (a string) to check".into()),
    }
    let uri = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or("no jwks_uri (a string) in the discovery document")?;
    if uri.starts_with("https://") {
        return Ok(uri.to_owned());
    }
    if !uri.starts_with("http://") {
        return Err(format!("the jwks_uri {uri} is not an https:// URL"));
    }
    // Keys over cleartext can be swapped by anyone on the path, who can then sign any token.
    // An issuer configured as http:// has chosen that for its discovery document already;
    // anything else needs the operator to say so.
    if allow_insecure_http || issuer.starts_with("http://") {
        Ok(uri.to_owned())
    } else {
        Err(format!(
            "the jwks_uri {uri} is plain http:// (keys anyone on the path could replace); \
             set allow_insecure_http: true on the issuer to accept it"
        ))
    }
}

/// GETs a document of bounded size; returns it with its `Cache-Control: max-age`.
async fn get(
    client: &reqwest::Client,
    url: &str,
) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
    let http = |message: String| FetchError::Http {
        url: url.to_owned(),
        message,
    };
    let mut resp = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| http(describe(&e)))?;
    if !resp.status().is_success() {
        return Err(http(format!("status {}", resp.status())));
    }
    let max_age = resp
        .headers()
        .get_all("cache-control")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|d| d.trim().strip_prefix("max-age="))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| http(describe(&e)))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(http(format!("larger than {MAX_DOCUMENT_BYTES} bytes")));
        }
    }
    Ok((body, max_age))
}

/// reqwest's error with its causes, which is where "certificate unknown" or "timed out"
/// actually appears.
fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::jwks_uri_in;

    const ISS: &str = "https://idp.test";

    #[test]
    fn a_discovery_document_must_name_the_issuer() {
        let doc = json!({"jwks_uri": "https://idp.test/keys"});
        let e = jwks_uri_in(&doc, ISS, false).unwrap_err();
        assert!(e.contains("no issuer"), "{e}");
        let other = json!({"issuer": "https://other.test", "jwks_uri": "https://idp.test/keys"});
        assert!(jwks_uri_in(&other, ISS, false).is_err());
        let ok = json!({"issuer": ISS, "jwks_uri": "https://idp.test/keys"});
        assert_eq!(
            jwks_uri_in(&ok, ISS, false).unwrap(),
            "https://idp.test/keys"
        );
    }

    #[test]
    fn an_http_jwks_uri_needs_allow_insecure_http() {
        let doc = json!({"issuer": ISS, "jwks_uri": "http://idp.test/keys"});
        let e = jwks_uri_in(&doc, ISS, false).unwrap_err();
        assert!(e.contains("allow_insecure_http"), "{e}");
        assert_eq!(
            jwks_uri_in(&doc, ISS, true).unwrap(),
            "http://idp.test/keys"
        );
        // An issuer configured as http:// already fetches its discovery document in the clear.
        let plain = json!({"issuer": "http://idp.test", "jwks_uri": "http://idp.test/keys"});
        assert!(jwks_uri_in(&plain, "http://idp.test", false).is_ok());
        let ftp = json!({"issuer": ISS, "jwks_uri": "ftp://idp.test/keys"});
        assert!(jwks_uri_in(&ftp, ISS, true).is_err());
    }
}
