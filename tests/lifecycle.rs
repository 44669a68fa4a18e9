//! `veto serve` from start to stop, as Kubernetes and an operator see it: it refuses to
//! start on anything invalid (SPEC §1, never a half-loaded state), takes its config from
//! `--config` or `VETO_CONFIG`, answers the kubelet's probes and Prometheus, serves Envoy
//! over TCP or a Unix socket, and stops cleanly on SIGTERM.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use reqwest::StatusCode;
use tokio::sync::oneshot;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::codegen::{Bytes, Service, http};
use tonic::transport::{Channel, Endpoint};

use crate::common::{
    AppSaw, EchoUpstream, Envoy, Idp, Pod, Run, SIDECAR_CONFIG, SUBJECT, Token, VetoDir,
    assert_denied_as_missing_token, bearer_request, check_allowed, fixture_jwk, free_loopback_addr,
    http_client, jwk_set, metric_value, poll_until, run_command, run_veto, veto_command,
};

/// The standard sidecar config (see `common::SIDECAR_CONFIG`).
const CONFIG: &str = SIDECAR_CONFIG;

/// Two rules, so `veto_rules{source="file"}` has something to count.
const RULES: &str = r#"{"rules": [{"sub": "mallory"}, {"session": "stolen-session"}]}"#;

/// The fixture keys and [`RULES`], ready for [`CONFIG`].
fn sidecar_dir() -> VetoDir {
    let dir = VetoDir::new().with_fixture_keys();
    dir.write("rules/rules.json", RULES);
    dir
}

/// How long veto may take to stop after SIGTERM: Kubernetes' grace period is 30 s, and
/// veto has nothing to flush, so a few seconds is already slow.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether anything accepts TCP connections on `addr`.
fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

// ---- refusing to start ----------------------------------------------------------------

/// `config_yaml` with `$GRPC_LISTEN` and `$ADMIN_LISTEN` replaced by `grpc` and `admin`.
fn with_addrs(config_yaml: &str, grpc: SocketAddr, admin: SocketAddr) -> String {
    config_yaml
        .replace("$GRPC_LISTEN", &grpc.to_string())
        .replace("$ADMIN_LISTEN", &admin.to_string())
}

/// `veto serve --config <config>`, run until it exits (which it must, soon).
fn serve(config: &Path) -> Run {
    run_command(veto_command([
        Path::new("serve"),
        Path::new("--config"),
        config,
    ]))
}

/// How many times [`serve_on`] runs veto again when a port it chose was taken.
const SERVE_ATTEMPTS: u32 = 5;

/// Runs `veto serve` with `config_yaml` as `<dir>/veto.yaml`, `$GRPC_LISTEN` and
/// `$ADMIN_LISTEN` replaced by `grpc` and `admin`: the address given, or for `None` a
/// [`free_loopback_addr`]. Another process can take such a port before veto binds it;
/// when veto says so, it runs again on new ones. The run, and the two addresses.
fn serve_on(
    dir: &VetoDir,
    config_yaml: &str,
    grpc: Option<SocketAddr>,
    admin: Option<SocketAddr>,
) -> (Run, SocketAddr, SocketAddr) {
    for attempt in 1.. {
        let (grpc_addr, admin_addr) = (
            grpc.unwrap_or_else(free_loopback_addr),
            admin.unwrap_or_else(free_loopback_addr),
        );
        let config = dir.write("veto.yaml", with_addrs(config_yaml, grpc_addr, admin_addr));
        let run = serve(&config);
        let lost = [(grpc, grpc_addr), (admin, admin_addr)]
            .iter()
            .any(|(given, addr)| {
                given.is_none()
                    && run
                        .stderr
                        .contains(&format!("{addr}: Address already in use"))
            });
        if !lost || attempt == SERVE_ATTEMPTS {
            return (run, grpc_addr, admin_addr);
        }
    }
    unreachable!("the last attempt returns")
}

/// Runs `veto serve` with `config_yaml` (its placeholders given free ports) as
/// `<dir>/veto.yaml`, and asserts that it exits 1 at once, with stderr naming each of
/// `names`, and that nothing listens on either port.
fn assert_serve_refuses(dir: &VetoDir, config_yaml: &str, names: &[&str]) {
    let (run, grpc, admin) = serve_on(dir, config_yaml, None, None);
    run.assert_exit(1).assert_stderr_names(names);
    assert!(
        !listening(admin),
        "the admin port answers after a refused start"
    );
    assert!(
        !listening(grpc),
        "the gRPC port answers after a refused start"
    );
}

/// A bad input that `veto check-config` and `veto serve` must both refuse (exit 1), each
/// naming the same things: `check-config` is the CI check that `serve` would start.
struct BadInput {
    what: &'static str,
    /// Makes a [`sidecar_dir`] bad; returns the config to write as `veto.yaml` (with
    /// [`CONFIG`]'s placeholders), or `None` for no config file at all.
    spoil: fn(&VetoDir) -> Option<String>,
    /// What stderr must name; `$DIR` stands for the dir.
    names: &'static [&'static str],
}

/// The inputs veto refuses, each once. What only one command can meet is tested beside
/// it: ports and the socket file below, summaries and `--root` in `cli.rs`.
const BAD_INPUTS: &[BadInput] = &[
    BadInput {
        what: "no config file",
        spoil: |_| None,
        names: &["$DIR/veto.yaml"],
    },
    BadInput {
        what: "an unknown config field",
        spoil: |_| {
            Some(CONFIG.replace(
                "hmac_secret_file: hs256.key",
                "hmac_secret_file: hs256.key\n    colour: red",
            ))
        },
        names: &["$DIR/veto.yaml", "issuers[0]", "colour"],
    },
    BadInput {
        what: "no issuer",
        spoil: |_| Some("grpc: {listen: $GRPC_LISTEN}\nadmin: {listen: $ADMIN_LISTEN}\n".into()),
        names: &["$DIR/veto.yaml: issuers: at least one issuer is required"],
    },
    BadInput {
        what: "an issuer entry without its issuer",
        spoil: |_| {
            Some(CONFIG.replace(
                "  - issuer: https://issuer.test\n    audiences",
                "  - audiences",
            ))
        },
        names: &["$DIR/veto.yaml", "issuer"],
    },
    BadInput {
        what: "a duration that is not one",
        spoil: |_| {
            Some(CONFIG.replace(
                "file: rules/rules.json",
                "file: rules/rules.json\n  max_token_lifetime: 1 fortnight",
            ))
        },
        names: &["$DIR/veto.yaml: revocation.max_token_lifetime: `1 fortnight`"],
    },
    BadInput {
        what: "a socket mode that is not octal digits",
        spoil: |_| {
            Some(CONFIG.replace(
                "grpc: {listen: $GRPC_LISTEN}",
                "grpc: {listen: $GRPC_LISTEN, socket_mode: 0x1B0}",
            ))
        },
        names: &["$DIR/veto.yaml: grpc.socket_mode: `0x1B0`"],
    },
    BadInput {
        what: "a key file that is garbage",
        spoil: |dir| {
            dir.write("jwks.json", "-----BEGIN NONSENSE-----\n");
            Some(CONFIG.into())
        },
        names: &["$DIR/veto.yaml: issuers[0].jwks_file: $DIR/jwks.json"],
    },
    BadInput {
        what: "a key file that is missing",
        spoil: |dir| {
            std::fs::remove_file(dir.path().join("hs256.key")).expect("remove the HMAC secret");
            Some(CONFIG.into())
        },
        names: &["$DIR/veto.yaml: issuers[0].hmac_secret_file: $DIR/hs256.key"],
    },
    BadInput {
        what: "an invalid rule in the rules file",
        spoil: |dir| {
            dir.write(
                "rules/rules.json",
                r#"{"rules": [{"sub": "mallory"}, {"sub": "x", "expires_at": "someday"}]}"#,
            );
            Some(CONFIG.into())
        },
        names: &["revocation.file: $DIR/rules/rules.json: rules[1].expires_at"],
    },
    BadInput {
        what: "a rules-file rule for an issuer that is not configured",
        spoil: |dir| {
            dir.write(
                "rules/rules.yaml",
                "rules:\n  - sub: mallory\n    iss: https://issuer.test\n  - sub: eve\n    iss: https://issuer.tset\n",
            );
            Some(CONFIG.replace("rules/rules.json", "rules/rules.yaml"))
        },
        names: &[
            "revocation.file: $DIR/rules/rules.yaml: rules[1].iss: `https://issuer.tset` is not a configured issuer",
        ],
    },
    BadInput {
        what: "a rules file that is missing",
        spoil: |dir| {
            std::fs::remove_file(dir.path().join("rules/rules.json"))
                .expect("remove the rules file");
            Some(CONFIG.into())
        },
        names: &["revocation.file: $DIR/rules/rules.json"],
    },
];

#[test]
fn check_config_and_serve_refuse_each_bad_input_naming_it_and_serve_opens_no_port() {
    for bad in BAD_INPUTS {
        let dir = sidecar_dir();
        let config = dir.path().join("veto.yaml");
        let names: Vec<String> = bad
            .names
            .iter()
            .map(|n| n.replace("$DIR", &dir.path().display().to_string()))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let served = match (bad.spoil)(&dir) {
            Some(config_yaml) => {
                let (run, grpc, admin) = serve_on(&dir, &config_yaml, None, None);
                assert!(
                    !listening(admin) && !listening(grpc),
                    "{}: a port answers after a refused start",
                    bad.what
                );
                run
            }
            None => serve(&config),
        };
        // The same file serve refused (its placeholders filled in).
        let checked = run_veto([Path::new("check-config"), &config]);

        for (command, run) in [("serve", &served), ("check-config", &checked)] {
            assert_eq!(
                run.status.code(),
                Some(1),
                "{command} with {}:\n{}",
                bad.what,
                run.output()
            );
            for name in &names {
                assert!(
                    run.stderr.contains(name),
                    "{command} with {} names `{name}`:\n{}",
                    bad.what,
                    run.output()
                );
            }
        }
        assert_eq!(
            checked.stdout, "",
            "check-config with {}: nothing on stdout",
            bad.what
        );
    }
}

#[test]
fn serve_never_deletes_a_regular_file_in_place_of_its_socket() {
    let dir = sidecar_dir();
    let not_a_socket = dir.write("veto.sock", "someone's data");
    let socket = dir.path().join("veto.sock");
    let config = CONFIG.replace("$GRPC_LISTEN", &format!("\"unix:{}\"", socket.display()));

    assert_serve_refuses(&dir, &config, &["grpc.listen"]);

    assert_eq!(
        std::fs::read_to_string(&not_a_socket).expect("the file is still there"),
        "someone's data"
    );
}

#[test]
fn serve_refuses_to_start_when_its_ports_are_taken_naming_the_listener() {
    for field in ["admin.listen", "grpc.listen"] {
        let dir = sidecar_dir();
        // Held until the end of the iteration: another process's listener on the port.
        let squatter = TcpListener::bind("127.0.0.1:0").expect("bind a port to take");
        let taken = squatter.local_addr().expect("read the taken port");
        let (grpc, admin) = match field {
            "grpc.listen" => (Some(taken), None),
            _ => (None, Some(taken)),
        };

        let (run, _, _) = serve_on(&dir, CONFIG, grpc, admin);
        run.assert_exit(1)
            .assert_stderr_names(&[field, &taken.to_string()]);
    }
}

#[test]
fn serve_without_a_config_is_a_usage_error() {
    run_command(veto_command(["serve"]))
        .assert_exit(2)
        .assert_stderr_names(&["--config"]);
}

// ---- starting, probes and metrics -----------------------------------------------------

#[tokio::test]
async fn veto_config_in_the_environment_works_like_the_config_flag() {
    let veto = sidecar_dir().start_with_config_from_env(CONFIG).await;

    let metrics = get_text(&veto.admin_url("/metrics")).await;

    assert!(
        metrics.contains(r#"veto_keys{issuer="https://issuer.test"}"#),
        "veto loaded the issuer of the config named in VETO_CONFIG:\n{metrics}"
    );
    assert!(listening(veto.grpc_addr()), "the gRPC port is open");
}

#[tokio::test]
async fn healthz_and_readyz_answer_200_once_started() {
    let veto = sidecar_dir().start(CONFIG).await;
    let http = http_client();

    for path in ["/healthz", "/readyz"] {
        let response = http
            .get(veto.admin_url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    }
}

#[tokio::test]
async fn metrics_count_a_denied_request_and_show_rules_keys_and_snapshot_version() {
    let pod = Pod::start(sidecar_dir(), CONFIG).await;
    let metrics_url = pod.veto.admin_url("/metrics");

    let before = get_text(&metrics_url).await;
    for series in [
        "veto_checks_total",
        "veto_snapshot_version",
        "veto_rules{source=\"file\"}",
        "veto_keys{issuer=\"https://issuer.test\"}",
    ] {
        assert!(
            before.contains(series),
            "/metrics shows {series}:\n{before}"
        );
    }
    assert_eq!(
        metric_value(&before, r#"veto_rules{source="file"}"#),
        Some(2.0),
        "{before}"
    );
    assert!(
        metric_value(&before, r#"veto_keys{issuer="https://issuer.test"}"#)
            .is_some_and(|n| n >= 4.0),
        "the four JWKs of the fixture set are counted:\n{before}"
    );
    assert!(
        metric_value(&before, "veto_snapshot_version").is_some(),
        "veto_snapshot_version is a number:\n{before}"
    );

    let response = pod.get("/orders").send().await.expect("send a request");
    assert_denied_as_missing_token(response).await;

    let denied = r#"veto_checks_total{decision="deny",reason="missing_token"}"#;
    let mut after = String::new();
    let counted = poll_until(Duration::from_secs(5), async || {
        after = get_text(&metrics_url).await;
        metric_value(&after, denied) == Some(1.0)
    })
    .await;
    assert!(
        counted,
        "{denied} 1 after one request without a token:\n{after}"
    );
}

#[tokio::test]
async fn readyz_says_what_veto_still_waits_for() {
    // The issuer's keys come from an identity provider that is down: never fetched.
    let idp = Idp::start_down(jwk_set([fixture_jwk("rsa-1")]));
    let config = CONFIG.replace(
        "jwks_file: jwks.json\n    hmac_secret_file: hs256.key",
        &format!("jwks_uri: {}", idp.jwks_uri()),
    );
    let veto = sidecar_dir().start_unready(&config).await;

    let response = http_client()
        .get(veto.admin_url("/readyz"))
        .send()
        .await
        .expect("GET /readyz");

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.text().await.expect("read the body"),
        "not ready: waiting for: keys of https://issuer.test\n"
    );
}

/// `GET url` (an admin URL), asserting 200; the body.
async fn get_text(url: &str) -> String {
    let response = http_client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(response.status(), StatusCode::OK, "GET {url}");
    response.text().await.expect("read the body")
}

/// The value of `series` (name and labels, exactly as exposed) in Prometheus text.
// ---- stopping ---------------------------------------------------------------------------

#[tokio::test]
async fn sigterm_makes_veto_exit_0_and_close_its_ports_and_envoy_then_fails_closed() {
    let mut pod = Pod::start(sidecar_dir(), CONFIG).await;
    // One allowed request first, so Envoy holds an HTTP/2 connection to veto, as in a pod
    // under traffic: veto must not wait forever for Envoy to hang up.
    AppSaw::read(pod.get_with_token("/", &Token::new().sign()).await).await;
    // And a scrape whose client keeps its connection open, as Prometheus does.
    let scraper = http_client();
    let scrape = scraper.get(pod.veto.admin_url("/metrics")).send().await;
    // Read to the end, so the connection goes back to the client's pool, idle.
    let scraped = scrape.expect("scrape /metrics").text().await;
    assert!(scraped.is_ok_and(|metrics| metrics.contains("veto_checks_total")));
    let (grpc, admin) = (pod.veto.grpc_addr(), pod.veto.admin_addr());

    pod.veto.terminate();

    let status = pod.veto.wait_for_exit(STOP_TIMEOUT).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "veto exits 0 within {STOP_TIMEOUT:?} of SIGTERM, got {status:?}\n{}",
        pod.veto.log()
    );
    assert!(!listening(grpc), "the gRPC port is closed after veto exits");
    assert!(
        !listening(admin),
        "the admin port is closed after veto exits"
    );
    let response = pod.get_with_token("/", &Token::new().sign()).await;
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "with veto gone, Envoy fails closed with 503"
    );
}

#[tokio::test]
async fn a_check_in_flight_when_sigterm_arrives_still_gets_its_answer() {
    let mut veto = sidecar_dir().start(CONFIG).await;
    let grpc = veto.grpc_addr();
    let (hold, opened, release) = Hold::new();
    let mut client = AuthorizationClient::new(HoldFirstBody {
        channel: Endpoint::from_shared(format!("http://{grpc}"))
            .expect("a socket address makes a valid URI")
            .connect()
            .await
            .expect("connect to veto's gRPC port"),
        hold: Arc::new(Mutex::new(Some(hold))),
    });
    let mut second = client.clone();
    let check = bearer_request(&Token::new().sign());
    let held_check = check.clone();
    let held = tokio::spawn(async move { client.check(held_check).await });
    opened.await.expect("the held Check opens its stream");
    // A second Check on the same HTTP/2 connection, answered in full: veto has read every
    // frame sent before it, so the held Check's stream is open at veto, waiting for its
    // message.
    let answered = second
        .check(check)
        .await
        .expect("a second Check is answered");
    check_allowed(answered.get_ref());

    veto.terminate();
    let draining = poll_until(STOP_TIMEOUT, async || !listening(grpc)).await;
    assert!(draining, "veto stops accepting connections on SIGTERM");
    assert!(
        !held.is_finished(),
        "the held Check is still in flight while veto drains"
    );
    release
        .send(())
        .expect("the held Check still waits for its message");

    let response = tokio::time::timeout(STOP_TIMEOUT, held)
        .await
        .expect("the held Check is answered")
        .expect("the Check task did not panic")
        .unwrap_or_else(|status| panic!("the held Check failed: {status:?}\n{}", veto.log()));
    check_allowed(response.get_ref());
    let status = veto.wait_for_exit(STOP_TIMEOUT).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "veto exits 0 once the Check in flight is answered, got {status:?}\n{}",
        veto.log()
    );
}

/// What [`HoldFirstBody`] does to the first call: tell `opened` once the call's headers
/// are sent (its body is first polled), then hold the body until `release` fires.
struct Hold {
    opened: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

impl Hold {
    /// The hold, the receiver `opened` fires on, and the sender that releases the body.
    fn new() -> (Hold, oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (opened, on_opened) = oneshot::channel();
        let (release, on_release) = oneshot::channel();
        let hold = Hold {
            opened,
            release: on_release,
        };
        (hold, on_opened, release)
    }
}

/// A gRPC channel whose first call sends its headers at once but holds its body (the
/// request message): a Check in flight for as long as the test wants. Later calls pass.
#[derive(Clone)]
struct HoldFirstBody {
    channel: Channel,
    hold: Arc<Mutex<Option<Hold>>>,
}

impl Service<http::Request<tonic::body::Body>> for HoldFirstBody {
    type Response = <Channel as Service<http::Request<tonic::body::Body>>>::Response;
    type Error = <Channel as Service<http::Request<tonic::body::Body>>>::Error;
    type Future = <Channel as Service<http::Request<tonic::body::Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::poll_ready(&mut self.channel, cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let Some(Hold { opened, release }) = self.hold.lock().expect("not poisoned").take() else {
            return self.channel.call(request);
        };
        let (parts, body) = request.into_parts();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, axum::Error>>(4);
        tokio::spawn(async move {
            let _ = release.await;
            let mut data = axum::body::Body::new(body).into_data_stream();
            while let Some(chunk) = data.next().await {
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
        });
        let held = OpenedOnFirstPoll {
            inner: ReceiverStream::new(rx),
            opened: Some(opened),
        };
        let body = tonic::body::Body::new(axum::body::Body::from_stream(held));
        self.channel.call(http::Request::from_parts(parts, body))
    }
}

/// A body stream that fires `opened` when first polled: the HTTP/2 client polls a
/// request's body only after queueing its headers.
struct OpenedOnFirstPoll<S> {
    inner: S,
    opened: Option<oneshot::Sender<()>>,
}

impl<S: Stream + Unpin> Stream for OpenedOnFirstPoll<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if let Some(opened) = self.opened.take() {
            let _ = opened.send(());
        }
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

// ---- a Unix socket ----------------------------------------------------------------------

/// [`CONFIG`] with the Check service on the Unix socket `<dir>/veto.sock` instead of TCP,
/// with `extra` (e.g. `socket_mode`) beside `listen`.
fn uds_config(extra: &str) -> String {
    CONFIG.replace(
        "grpc: {listen: $GRPC_LISTEN}",
        &format!(r#"grpc: {{listen: "unix:$DIR/veto.sock"{extra}}}"#),
    )
}

/// The permission bits of `path`.
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn over_a_unix_socket_a_valid_token_reaches_the_app_and_the_socket_is_mode_0660() {
    let mut veto = sidecar_dir().start(&uds_config("")).await;
    let socket = veto.dir().join("veto.sock");
    assert_eq!(mode(&socket), 0o660, "the socket's default mode is 0660");
    let app = EchoUpstream::start().await;
    let envoy = Envoy::start_uds(&socket, app.addr()).await;
    let http = http_client();

    let response = http
        .get(envoy.url("/orders"))
        .bearer_auth(Token::new().sign())
        .send()
        .await
        .expect("send a request through Envoy");
    let saw = AppSaw::read(response).await;
    assert_eq!(saw.header("x-jwt-sub"), [SUBJECT]);
    let response = http
        .get(envoy.url("/orders"))
        .send()
        .await
        .expect("send a request through Envoy");
    assert_denied_as_missing_token(response).await;

    veto.terminate();
    let status = veto.wait_for_exit(STOP_TIMEOUT).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "veto on a Unix socket exits 0 on SIGTERM, got {status:?}\n{}",
        veto.log()
    );
    assert!(
        !socket.exists(),
        "veto removes its socket file when it stops"
    );
}

#[tokio::test]
async fn the_socket_has_its_socket_mode_from_the_moment_it_exists() {
    let dir = sidecar_dir();
    // Every change to the dir's entries, in order (inotify keeps one watch's events in
    // order): a chmod of the socket after its creation would show as a metadata change.
    let (events, changes) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(events).expect("create a file watcher");
    notify::Watcher::watch(
        &mut watcher,
        dir.path(),
        notify::RecursiveMode::NonRecursive,
    )
    .expect("watch the dir");

    let veto = dir.start(&uds_config(r#", socket_mode: "0600""#)).await;
    let socket = veto.dir().join("veto.sock");
    assert_eq!(mode(&socket), 0o600);
    // A file created after veto is serving: once its event arrives, every event of the
    // socket's start has too.
    let marker = veto.write("after-start", "");

    let mut seen = Vec::new();
    loop {
        let event = changes
            .recv_timeout(Duration::from_secs(5))
            .expect("the marker's creation is reported")
            .expect("a file event");
        if event.paths.contains(&marker) {
            break;
        }
        if event.paths.contains(&socket) {
            seen.push(event.kind);
        }
    }
    assert!(
        !seen.iter().any(|kind| matches!(
            kind,
            notify::EventKind::Modify(notify::event::ModifyKind::Metadata(_))
        )),
        "the socket's permissions changed after it was created: {seen:?}"
    );
}

#[tokio::test]
async fn socket_mode_0600_makes_the_socket_owner_only() {
    let veto = sidecar_dir()
        .start(&uds_config(r#", socket_mode: "0600""#))
        .await;

    assert_eq!(mode(&veto.dir().join("veto.sock")), 0o600);
}

#[tokio::test]
async fn a_stale_socket_file_left_by_a_crash_does_not_stop_veto_from_starting() {
    let dir = sidecar_dir();
    let socket = dir.path().join("veto.sock");
    // A listener dropped without removing its file: what a killed veto leaves behind.
    drop(UnixListener::bind(&socket).expect("bind a socket to leave behind"));
    assert!(
        UnixStream::connect(&socket).is_err(),
        "the stale socket has nobody behind it"
    );

    let veto = dir.start(&uds_config("")).await;

    UnixStream::connect(veto.dir().join("veto.sock"))
        .expect("veto listens on the socket path the stale file occupied");
}
