//! The helper `bench/run` drives veto's benchmark with: it makes the inputs (tokens, the
//! gRPC frame h2load sends, rules files laid out like a Kubernetes ConfigMap volume) and
//! the load h2load cannot make (a Check per distinct token, admin pushes, ConfigMap swaps).
//! Every command prints one line of `key=value` pairs for the script to read.
//!
//! ```sh
//! cargo build --release --example bench_tool
//! target/release/examples/bench_tool --help
//! ```

use std::fmt::Write as _;
use std::future::poll_fn;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse};
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tonic::codegen::{Body as _, Bytes, Service, http};
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
#[command(about = "inputs and load for bench/run")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mint COUNT tokens (one per line, each with its own jti and sub) with veto's minting code.
    Tokens {
        #[arg(long)]
        key: PathBuf,
        #[arg(long, default_value = "RS256")]
        alg: String,
        #[arg(long)]
        kid: Option<String>,
        #[arg(long, default_value = "https://auth.example.com")]
        iss: String,
        #[arg(long, default_value = "orders-api")]
        aud: String,
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Token lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the length-prefixed gRPC message of the CheckRequest Envoy sends for a request
    /// carrying the first token of TOKENS (h2load's `-d` body).
    Frame {
        #[arg(long)]
        tokens: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a rules file of COUNT rules: mostly `session`, some `sub`, `claim` and global
    /// cutoffs, none of which revokes a token minted by `tokens`. With --configmap, lay it
    /// out in DIR the way the kubelet does (DIR/rules.json -> ..data/rules.json).
    Rules {
        #[arg(long)]
        count: usize,
        /// Changes every selector, so each variant is a different snapshot.
        #[arg(long, default_value_t = 0)]
        variant: u64,
        #[arg(long, conflicts_with = "configmap")]
        out: Option<PathBuf>,
        #[arg(long)]
        configmap: Option<PathBuf>,
    },
    /// Replace the rules file of a ConfigMap directory COUNT times (new hidden directory,
    /// `..data` symlink renamed over), each time waiting until veto reports the reload.
    Swap {
        #[arg(long)]
        configmap: PathBuf,
        #[arg(long)]
        count: usize,
        /// Rules in each new file.
        #[arg(long)]
        rules: usize,
        /// veto's admin address, for /metrics.
        #[arg(long)]
        admin: String,
        /// First variant number (each swap uses the next).
        #[arg(long, default_value_t = 1)]
        first_variant: u64,
        /// Give up waiting for one reload after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Push COUNT `session` rules through the admin API, one POST /v1/rules each.
    Push {
        #[arg(long)]
        admin: String,
        #[arg(long)]
        admin_token_file: PathBuf,
        #[arg(long)]
        count: usize,
        /// Stop after this many seconds even if not every push was sent.
        #[arg(long, default_value_t = 120)]
        max_seconds: u64,
    },
    /// Send REQUESTS Checks, one per token of TOKENS in turn (so each is verified afresh
    /// when there are at least as many tokens as requests): what h2load's single body
    /// cannot do.
    Load {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        tokens: PathBuf,
        #[arg(long)]
        requests: usize,
        /// HTTP/2 connections.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Concurrent Checks per connection.
        #[arg(long, default_value_t = 16)]
        streams: usize,
        /// Stop after this many seconds even if not every request was sent.
        #[arg(long, default_value_t = 60)]
        max_seconds: u64,
    },
    /// Latency percentiles of an h2load `--log-file` (third column: microseconds).
    Stats { log: PathBuf },
    /// Print N free loopback TCP ports.
    Ports { n: usize },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_tool: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Tokens {
            key,
            alg,
            kid,
            iss,
            aud,
            count,
            ttl,
            out,
        } => tokens(&key, &alg, kid, &iss, &aud, count, ttl, &out),
        Command::Frame { tokens, out } => {
            let token = read_tokens(&tokens)?.swap_remove(0);
            let frame = runtime()?.block_on(encode(check_request(&token)))?;
            std::fs::write(&out, &frame).with_context(|| format!("{}", out.display()))?;
            println!("frame_bytes={}", frame.len());
            Ok(())
        }
        Command::Rules {
            count,
            variant,
            out,
            configmap,
        } => {
            let text = rules_json(count, variant);
            match (out, configmap) {
                (Some(out), None) => {
                    std::fs::write(&out, &text).with_context(|| format!("{}", out.display()))?
                }
                (None, Some(dir)) => configmap_write(&dir, &text, variant)?,
                _ => bail!("give --out FILE or --configmap DIR"),
            }
            println!("rules={count} bytes={}", text.len());
            Ok(())
        }
        Command::Swap {
            configmap,
            count,
            rules,
            admin,
            first_variant,
            timeout,
        } => runtime()?.block_on(swap(
            &configmap,
            count,
            rules,
            &admin,
            first_variant,
            Duration::from_secs(timeout),
        )),
        Command::Push {
            admin,
            admin_token_file,
            count,
            max_seconds,
        } => runtime()?.block_on(push(
            &admin,
            &admin_token_file,
            count,
            Duration::from_secs(max_seconds),
        )),
        Command::Load {
            addr,
            tokens,
            requests,
            connections,
            streams,
            max_seconds,
        } => {
            let tokens = read_tokens(&tokens)?;
            runtime()?.block_on(load(
                &addr,
                &tokens,
                requests,
                connections,
                streams,
                Duration::from_secs(max_seconds),
            ))
        }
        Command::Stats { log } => {
            let text =
                std::fs::read_to_string(&log).with_context(|| format!("{}", log.display()))?;
            let mut us: Vec<u32> = text
                .lines()
                .filter_map(|l| l.split('\t').nth(2)?.trim().parse().ok())
                .collect();
            us.sort_unstable();
            println!(
                "count={} p50_us={} p99_us={}",
                us.len(),
                percentile(&us, 0.50),
                percentile(&us, 0.99)
            );
            Ok(())
        }
        Command::Ports { n } => {
            // Hold every listener until all are bound, so the N ports are distinct.
            let listeners = (0..n)
                .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
                .collect::<Result<Vec<_>, _>>()?;
            let ports = listeners
                .iter()
                .map(|l| l.local_addr().map(|a| a.port().to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            println!("{}", ports.join(" "));
            Ok(())
        }
    }
}

/// One thread: `bench/run` pins this process to its own core.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

// ---- tokens and the Check request -----------------------------------------------------

#[allow(clippy::too_many_arguments)]
fn tokens(
    key: &Path,
    alg: &str,
    kid: Option<String>,
    iss: &str,
    aud: &str,
    count: usize,
    ttl: u64,
    out: &Path,
) -> anyhow::Result<()> {
    let alg: jsonwebtoken::Algorithm = alg.parse().context("--alg")?;
    let now = veto::clock::unix_now();
    let started = Instant::now();
    // Signing RSA is ~1 ms a token: use every core we are given.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunks: Vec<Vec<usize>> = (0..threads)
        .map(|t| (t..count).step_by(threads).collect())
        .collect();
    let minted = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                let kid = kid.clone();
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|i| {
                            veto::jwt::mint::mint(&veto::jwt::mint::TokenSpec {
                                key_file: key.to_path_buf(),
                                alg,
                                kid: kid.clone(),
                                iss: Some(iss.to_owned()),
                                sub: Some(format!("bench-user-{i}")),
                                aud: Some(aud.to_owned()),
                                ttl: Duration::from_secs(ttl),
                                claims: vec!["azp=bench-app".into(), "tenant=bench".into()],
                                now,
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a minting thread panicked"))
            .collect::<Result<Vec<_>, _>>()
    })?;
    let mut text = String::new();
    for t in minted.into_iter().flatten() {
        text.push_str(&t);
        text.push('\n');
    }
    std::fs::write(out, text).with_context(|| format!("{}", out.display()))?;
    println!(
        "tokens={count} seconds={:.2}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn read_tokens(file: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
    let tokens: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if tokens.is_empty() {
        bail!("{}: no tokens", file.display());
    }
    Ok(tokens)
}

fn peer(port: u32) -> Peer {
    Peer {
        address: Some(Address {
            address: Some(AddressKind::SocketAddress(SocketAddress {
                address: "127.0.0.1".into(),
                port_specifier: Some(PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        ..Default::default()
    }
}

/// The CheckRequest Envoy 1.40 sends for `GET /orders/42` with `envoy/envoy.yaml`'s
/// `allowed_headers` (authorization only, plus the pseudo-headers Envoy always includes).
fn check_request(token: &str) -> CheckRequest {
    let headers = [
        (":authority", "127.0.0.1:10000"),
        (":method", "GET"),
        (":path", "/orders/42"),
        (":scheme", "http"),
        ("authorization", &format!("Bearer {token}")),
    ];
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(51234)),
            destination: Some(peer(10000)),
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    id: "11371183093958627613".into(),
                    method: "GET".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    path: "/orders/42".into(),
                    host: "127.0.0.1:10000".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

/// The request body a tonic client sends for `request`: exactly the gRPC length-prefixed
/// message. Captured from the client's own encoder (no protobuf code of ours to get wrong).
async fn encode(request: CheckRequest) -> anyhow::Result<Vec<u8>> {
    let captured = Capture::default();
    let mut client = AuthorizationClient::new(captured.clone());
    // The capture answers with an error once it has the body; that error is expected.
    let _ = client.check(request).await;
    let body = captured.0.get().cloned();
    body.context("the gRPC client sent no request body")
}

/// A gRPC "transport" that keeps the request body and answers nothing.
#[derive(Clone, Default)]
struct Capture(Arc<OnceLock<Vec<u8>>>);

impl Service<http::Request<tonic::body::Body>> for Capture {
    type Response = http::Response<tonic::body::Body>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let slot = self.0.clone();
        Box::pin(async move {
            let mut body = req.into_body();
            let mut bytes = Vec::new();
            while let Some(frame) = poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
            {
                if let Ok(data) = frame?.into_data() {
                    let data: Bytes = data;
                    bytes.extend_from_slice(&data);
                }
            }
            let _ = slot.set(bytes);
            Err("captured".into())
        })
    }
}

// ---- distinct-token load --------------------------------------------------------------

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    allowed: u64,
    denied: u64,
    errors: u64,
}

async fn load(
    addr: &str,
    tokens: &[String],
    requests: usize,
    connections: usize,
    streams: usize,
    max: Duration,
) -> anyhow::Result<()> {
    let checks: Arc<Vec<CheckRequest>> =
        Arc::new(tokens.iter().map(|t| check_request(t)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let mut channels: Vec<Channel> = Vec::new();
    for _ in 0..connections {
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| format!("connect to {addr}"))?;
        channels.push(channel);
    }
    let started = Instant::now();
    let deadline = started + max;
    let mut tasks = Vec::new();
    for channel in &channels {
        for _ in 0..streams {
            let mut client = AuthorizationClient::new(channel.clone());
            let checks = checks.clone();
            let next = next.clone();
            tasks.push(tokio::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests || Instant::now() >= deadline {
                        return tally;
                    }
                    let request = checks[i % checks.len()].clone();
                    let sent = Instant::now();
                    let answer = client.check(request).await;
                    tally
                        .latencies_us
                        .push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                    match answer.map(tonic::Response::into_inner) {
                        Ok(CheckResponse {
                            status: Some(s), ..
                        }) if s.code == 0 => tally.allowed += 1,
                        Ok(_) => tally.denied += 1,
                        Err(_) => tally.errors += 1,
                    }
                }
            }));
        }
    }
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await?;
        all.latencies_us.extend(t.latencies_us);
        all.allowed += t.allowed;
        all.denied += t.denied;
        all.errors += t.errors;
    }
    let seconds = started.elapsed().as_secs_f64();
    let done = all.latencies_us.len();
    all.latencies_us.sort_unstable();
    println!(
        "requests={done} allowed={} denied={} errors={} seconds={seconds:.3} rps={:.0} p50_us={} p99_us={} distinct_tokens={}",
        all.allowed,
        all.denied,
        all.errors,
        done as f64 / seconds,
        percentile(&all.latencies_us, 0.50),
        percentile(&all.latencies_us, 0.99),
        tokens.len().min(requests),
    );
    Ok(())
}

fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

// ---- rules files and ConfigMap swaps --------------------------------------------------

/// COUNT rules: 2 global cutoffs (in 2020, before any bench token's `iat`), 0.5% `claim`,
/// 2% `sub`, the rest `session` (half of them expiring in a day, as a revoked session's rule
/// does once its tokens have expired). The variant is part of every selector.
fn rules_json(count: usize, variant: u64) -> String {
    let expires = veto::clock::unix_now() + 86_400;
    let globals = count.min(2);
    let claims = (count / 200).max(1).min(count - globals);
    let subs = (count / 50).max(1).min(count - globals - claims);
    let sessions = count - globals - claims - subs;
    let mut out = String::with_capacity(count * 64 + 64);
    out.push_str("{\"rules\": [\n");
    let mut first = true;
    let mut rule = |out: &mut String, text: std::fmt::Arguments<'_>| {
        if !first {
            out.push_str(",\n");
        }
        first = false;
        // Writing to a String cannot fail.
        let _ = out.write_fmt(text);
    };
    for i in 0..globals {
        if i == 0 {
            rule(
                &mut out,
                format_args!("{{\"issued_before\": \"2020-01-01T00:00:00Z\"}}"),
            );
        } else {
            rule(
                &mut out,
                format_args!(
                    "{{\"iss\": \"https://auth.example.com\", \"issued_before\": 1577836800, \"reason\": \"variant {variant}\"}}"
                ),
            );
        }
    }
    for i in 0..claims {
        if i % 2 == 0 {
            rule(
                &mut out,
                format_args!("{{\"claim\": \"azp\", \"value\": \"app-{variant}-{i}\"}}"),
            );
        } else {
            rule(
                &mut out,
                format_args!(
                    "{{\"claim\": \"tenant\", \"value\": \"t-{variant}-{i}\", \"issued_before\": \"2026-01-01T00:00:00Z\"}}"
                ),
            );
        }
    }
    for i in 0..subs {
        rule(
            &mut out,
            format_args!("{{\"sub\": \"user-{variant}-{i}\"}}"),
        );
    }
    for i in 0..sessions {
        if i % 2 == 0 {
            rule(
                &mut out,
                format_args!("{{\"session\": \"s{variant}-{i:08}\", \"expires_at\": {expires}}}"),
            );
        } else if i % 100 == 1 {
            rule(
                &mut out,
                format_args!(
                    "{{\"session\": \"s{variant}-{i:08}\", \"reason\": \"reported stolen\"}}"
                ),
            );
        } else {
            rule(
                &mut out,
                format_args!("{{\"session\": \"s{variant}-{i:08}\"}}"),
            );
        }
    }
    out.push_str("\n]}\n");
    out
}

/// Writes `text` as DIR/rules.json the way the kubelet updates a ConfigMap volume: a fresh
/// hidden directory, a `..data_tmp` symlink to it renamed over `..data` (atomic), the
/// `rules.json -> ..data/rules.json` link created if missing, the old directory removed.
fn configmap_write(dir: &Path, text: &str, variant: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let stamp = format!("..bench_{}_{variant}", veto::clock::unix_now_ms());
    let fresh = dir.join(&stamp);
    std::fs::create_dir(&fresh)?;
    let mut f = std::fs::File::create(fresh.join("rules.json"))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    let data = dir.join("..data");
    let old = std::fs::read_link(&data).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, &data)?;
    let link = dir.join("rules.json");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/rules.json", &link)?;
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old))?;
    }
    Ok(())
}

/// A counter or gauge from veto's /metrics, by its full series name.
async fn metric(http: &reqwest::Client, admin: &str, series: &str) -> anyhow::Result<f64> {
    let text = http
        .get(format!("http://{admin}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0))
}

async fn swap(
    dir: &Path,
    count: usize,
    rules: usize,
    admin: &str,
    first_variant: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    const OK: &str = "veto_snapshot_reloads_total{result=\"ok\"}";
    const ERROR: &str = "veto_snapshot_reloads_total{result=\"error\"}";
    let http = reqwest::Client::new();
    let errors_before = metric(&http, admin, ERROR).await?;
    let mut took = Vec::new();
    for n in 0..count {
        let variant = first_variant + n as u64;
        // Build the text first: the measured time is veto's (notice, read, parse, swap).
        let text = rules_json(rules, variant);
        let before = metric(&http, admin, OK).await?;
        let started = Instant::now();
        configmap_write(dir, &text, variant)?;
        loop {
            if metric(&http, admin, OK).await? > before {
                break;
            }
            if metric(&http, admin, ERROR).await? > errors_before {
                bail!("veto rejected rules file variant {variant} (see its log)");
            }
            if started.elapsed() > timeout {
                bail!("veto did not reload variant {variant} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        took.push(started.elapsed().as_millis() as u32);
    }
    took.sort_unstable();
    println!(
        "swaps={count} rules={rules} reload_ms_p50={} reload_ms_max={}",
        percentile(&took, 0.5),
        took.last().copied().unwrap_or(0)
    );
    Ok(())
}

async fn push(admin: &str, token_file: &Path, count: usize, max: Duration) -> anyhow::Result<()> {
    let token =
        std::fs::read_to_string(token_file).with_context(|| format!("{}", token_file.display()))?;
    let auth = format!("Bearer {}", token.trim());
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut took = Vec::new();
    let mut failed = 0;
    let nonce = veto::clock::unix_now();
    for i in 0..count {
        if started.elapsed() > max {
            break;
        }
        let sent = Instant::now();
        let answer = http
            .post(format!("http://{admin}/v1/rules"))
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(format!(
                "{{\"session\": \"pushed-{nonce}-{i}\", \"ttl_seconds\": 3600}}"
            ))
            .send()
            .await;
        match answer {
            Ok(r) if r.status().as_u16() == 201 => {}
            Ok(r) => {
                failed += 1;
                eprintln!("push {i}: HTTP {}", r.status());
            }
            Err(e) => {
                failed += 1;
                eprintln!("push {i}: {e}");
            }
        }
        took.push(sent.elapsed().as_micros() as u32);
    }
    let sent = took.len();
    took.sort_unstable();
    println!(
        "pushes={sent} failed={failed} seconds={:.2} push_ms_p50={:.2} push_ms_p99={:.2}",
        started.elapsed().as_secs_f64(),
        f64::from(percentile(&took, 0.5)) / 1000.0,
        f64::from(percentile(&took, 0.99)) / 1000.0,
    );
    if failed > 0 || sent < count {
        bail!("{failed} of {sent} pushes failed ({count} planned)");
    }
    Ok(())
}
