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
/// terminal or the container runtime's pipe; the queue blocks rather than drops when full,
/// because every denial must be explained.
fn init_tracing() -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("VETO_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
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
