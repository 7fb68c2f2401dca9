//! relayd: the media relay daemon.
//!
//! Reads an optional TOML file (`--config`, example in `deploy/relayd.toml`), lets flags
//! override it, starts the socket datapath and the control API, and with XDP interfaces
//! configured loads and attaches the XDP program. SIGINT/SIGTERM stop it cleanly (XDP detached).

/// mimalloc instead of glibc malloc (why: the workspace Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::Parser;
use relay_userspace::{
    api,
    config::Config,
    service::{self, Service},
    xdp::AttachMode,
};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info};

/// Command line of relayd; flags override the file.
#[derive(Debug, Parser)]
#[command(name = "relayd", version, about = "Secure media relay daemon")]
struct Cli {
    /// TOML configuration file (every key optional; defaults serve loopback).
    #[arg(long, env = "RELAYD_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the control API.
    #[arg(long, env = "RELAYD_HTTP_LISTEN")]
    http_listen: Option<std::net::SocketAddr>,
    /// Bearer token file (created with a fresh token when missing).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Datapath worker threads (0: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// Pin datapath workers to these CPUs (comma-separated).
    #[arg(long, value_delimiter = ',')]
    cpus: Option<Vec<usize>>,
    /// Attach the XDP program to this interface (repeat, or separate with commas).
    #[arg(long = "xdp-interface", value_delimiter = ',')]
    xdp_interfaces: Vec<String>,
    /// XDP attach mode: native (driver) or generic (skb, slow; only for devices without native
    /// XDP).
    #[arg(long)]
    xdp_mode: Option<AttachMode>,
    /// AF_XDP workers for SRTP flows (with the xdp datapath; 0: none).
    #[arg(long)]
    xdp_workers: Option<usize>,
    /// Pin AF_XDP workers to these CPUs (comma-separated).
    #[arg(long, value_delimiter = ',')]
    xdp_cpus: Option<Vec<usize>>,
    /// On exit, detach XDP and remove its pinned maps and links (overrides
    /// `datapath.xdp_keep_on_exit`): for taking the relay out of service.
    #[arg(long)]
    xdp_detach_on_exit: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RELAYD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("relayd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relayd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn configuration(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(listen) = cli.http_listen {
        config.http.listen = listen;
    }
    if let Some(path) = &cli.token_file {
        config.http.token_file.clone_from(path);
    }
    if let Some(workers) = cli.workers {
        config.datapath.workers = workers;
    }
    if let Some(cpus) = &cli.cpus {
        config.datapath.cpus.clone_from(cpus);
    }
    if !cli.xdp_interfaces.is_empty() {
        config
            .datapath
            .xdp_interfaces
            .clone_from(&cli.xdp_interfaces);
    }
    if cli.xdp_detach_on_exit {
        config.datapath.xdp_keep_on_exit = false;
    }
    if let Some(workers) = cli.xdp_workers {
        config.datapath.xdp_workers = workers;
    }
    if let Some(cpus) = &cli.xdp_cpus {
        config.datapath.xdp_cpus.clone_from(cpus);
    }
    if let Some(mode) = cli.xdp_mode {
        config.datapath.xdp_mode = match mode {
            AttachMode::Native => relay_userspace::config::XdpModeConfig::Native,
            AttachMode::Generic => relay_userspace::config::XdpModeConfig::Generic,
        };
    }
    config.validate()?;
    Ok(config)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = configuration(&cli)?;
    let token = service::token(&config)?;
    let listen = config.http.listen;
    let max_body = config.http.max_body_bytes;
    let xdp_interfaces = config.datapath.xdp_interfaces.clone();
    let xdp_mode = config.datapath.xdp_mode;
    let service = Service::start(config)?;
    let state = service.api_state(token);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    info!(boot_id = state.boot_id(), "relayd started");
    // One line per endpoint, for operators and for `cargo xtask up`.
    println!("relayd: api     http://{local}/v1/");
    println!("relayd: health  http://{local}/v1/health");
    println!("relayd: metrics http://{local}/metrics");
    for interface in &xdp_interfaces {
        println!("relayd: xdp     {interface} ({xdp_mode:?} mode)");
    }
    axum::serve(listener, api::router(state, max_body))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP service failed")?;
    service.stop()?;
    info!("relayd stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let (mut interrupt, mut terminate) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            error!(%e, "cannot install signal handlers; stop relayd with SIGKILL");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = interrupt.recv() => info!("SIGINT received, shutting down"),
        _ = terminate.recv() => info!("SIGTERM received, shutting down"),
    }
}
