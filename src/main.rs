//! The `sluice` binary: command line, config loading, and the wiring of connectors into the
//! pipeline runtime.

mod api;
mod backend;
mod check;
mod cli;
mod config;
mod connect;
mod control;
mod log_cmd;
mod registry_cmd;
#[cfg(feature = "opensearch")]
mod reindex;
mod run;
mod status;

use std::process::ExitCode;

use clap::Parser;

/// Exit codes: 0 ok, 1 runtime failure, 2 bad usage or config.
pub const EXIT_RUNTIME: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    if matches!(
        cli.command,
        cli::Command::Log { .. } | cli::Command::Status { .. }
    ) {
        die_quietly_on_closed_pipe();
    }
    init_tracing();
    match cli::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", describe(&failure.error));
            ExitCode::from(failure.code)
        }
    }
}

/// glibc gives each thread that allocates its own malloc arena (up to 8 per core), and memory
/// freed on one thread's arena is not reused by another: with the pipeline's tasks moving
/// between worker threads that doubled peak RSS while streaming (62 MB against 38 MB with 4
/// arenas, same throughput; `dev/bench` pg_stream). A user's MALLOC_ARENA_MAX still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in main, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 4);
        }
    }
}

/// `sluice status | head` closes the pipe early: end like other command-line tools (killed
/// by SIGPIPE, no message) instead of panicking in `println!`. Only for the commands that
/// print: Rust ignores SIGPIPE by default, and the rest must keep it ignored, since writing
/// to a socket the server closed raises it too (TLS writes with writev, which has no
/// MSG_NOSIGNAL): `sluice run` was killed that way when a server dropped a TLS connection.
fn die_quietly_on_closed_pipe() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// The error and its causes on one line, leaving out causes the message already quotes (most
/// of sluice's errors include their source in their own text).
fn describe(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

/// An error and the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn config(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: EXIT_CONFIG,
            error: error.into(),
        }
    }

    pub fn runtime(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: EXIT_RUNTIME,
            error: error.into(),
        }
    }
}
