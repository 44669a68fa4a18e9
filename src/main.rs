//! The `veto` binary: parse the command line, call into the library, map errors to an exit
//! code (0 ok, 1 invalid input, 2 usage error; SPEC §1).

use std::process::ExitCode;
use std::str::FromStr;

use clap::Parser;
use veto::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    match run(cli.command) {
        Ok(Some(out)) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            // Each error's message already names its cause (file, field, OS error); `{:#}`
            // would print the cause a second time. A message may list several problems, one
            // per line: each line gets the prefix, so every problem reads (and greps) alike.
            for line in e.to_string().lines() {
                eprintln!("veto: {line}");
            }
            ExitCode::from(1)
        }
    }
}

fn run(command: Command) -> anyhow::Result<Option<String>> {
    match command {
        Command::Serve { config } => {
            // Held until `serve` returns, so the log lines still queued are written.
            let _flush_logs = init_tracing();
            let config = veto::config::Config::load(&config)?;
            let runtime = tokio::runtime::Runtime::new()
                .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
            runtime.block_on(veto::serve::run(config))?;
            Ok(None)
        }
        Command::CheckRules { file } => Ok(Some(veto::check::check_rules(&file)?)),
        Command::CheckConfig { file, root } => {
            Ok(Some(veto::check::check_config(&file, root.as_deref())?))
        }
        Command::Token {
            key,
            alg,
            kid,
            iss,
            sub,
            aud,
            ttl,
            claims,
        } => {
            let alg = jsonwebtoken::Algorithm::from_str(&alg)
                .map_err(|_| anyhow::anyhow!("--alg {alg}: not a supported algorithm"))?;
            let ttl = veto::config::parse_duration(&ttl)
                .ok_or_else(|| anyhow::anyhow!("--ttl {ttl}: expected 30s, 15m, 1h or seconds"))?;
            let spec = veto::jwt::mint::TokenSpec {
                key_file: key,
                alg,
                kid,
                iss,
                sub,
                aud,
                ttl,
                claims,
                now: veto::clock::unix_now(),
            };
            Ok(Some(veto::jwt::mint::mint(&spec)?))
        }
    }
}

/// JSON logs to stderr, one event per line; `RUST_LOG` (or `VETO_LOG`) sets the filter.
/// A background thread does the writing, so a Check that logs a denial never waits on the
/// terminal or the container runtime's pipe. When its queue is full (the pipe has been
/// full for a long while) a line is dropped rather than a Check blocked, and counted: a
/// warning gives the count once lines get through again. Denial lines are also summed per
/// reason per second (`authz::DENIAL_LINES_PER_SECOND`), so a flood rarely gets that far.
fn init_tracing() -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("VETO_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    let report = move || {
        let mut reported = 0;
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            let total = dropped.dropped_lines();
            if total > reported {
                // This line may be dropped too: `total` is cumulative, so the next one that
                // gets through still accounts for every dropped line.
                tracing::warn!(
                    dropped = total - reported,
                    total,
                    "log lines dropped: the log pipe was full"
                );
                reported = total;
            }
        }
    };
    // Without the thread the logs still work; only the count of dropped lines is missing.
    let _ = std::thread::Builder::new()
        .name("log-drops".into())
        .spawn(report);
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_writer(writer)
        .with_env_filter(filter)
        // Audit lines carry lists (`ids`): written as JSON arrays, not strings.
        .map_event_format(veto::admin::audit::JsonLines)
        .init();
    guard
}
