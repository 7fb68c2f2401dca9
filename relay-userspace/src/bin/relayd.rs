//! relayd: the media relay daemon.
//!
//! Serves `/v1/health` and `/metrics`, and with `--xdp-interface` loads the XDP program and
//! attaches it (native mode unless `--xdp-mode generic`). SIGINT/SIGTERM detach and exit cleanly.

use std::{
    net::SocketAddr,
    process::ExitCode,
    sync::{Arc, Mutex, PoisonError},
};

use anyhow::Context as _;
use clap::Parser;
use relay_userspace::{
    api::{self, ApiState},
    xdp::{AttachMode, RelayXdp},
};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info};

/// Command line of relayd.
#[derive(Debug, Parser)]
#[command(name = "relayd", version, about = "Secure media relay daemon")]
struct Cli {
    /// Address of the HTTP service (health, metrics).
    #[arg(long, env = "RELAYD_HTTP_LISTEN", default_value = "127.0.0.1:8740")]
    http_listen: SocketAddr,
    /// Attach the XDP program to this interface (repeat, or separate with commas).
    #[arg(long = "xdp-interface", value_delimiter = ',')]
    xdp_interfaces: Vec<String>,
    /// XDP attach mode: native (driver) or generic (skb, slow; only for devices without native
    /// XDP).
    #[arg(long, default_value = "native")]
    xdp_mode: AttachMode,
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    let xdp = if cli.xdp_interfaces.is_empty() {
        None
    } else {
        let mut xdp = RelayXdp::load()?;
        for interface in &cli.xdp_interfaces {
            // On error, dropping `xdp` detaches from the interfaces attached so far.
            xdp.attach(interface, cli.xdp_mode)?;
        }
        Some(Arc::new(Mutex::new(xdp)))
    };
    let state = ApiState::new(xdp.clone());
    let listener = tokio::net::TcpListener::bind(cli.http_listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.http_listen))?;
    let local = listener.local_addr()?;
    info!(boot_id = state.boot_id(), "relayd started");
    // One line per endpoint, for operators and for `cargo xtask up`.
    println!("relayd: health  http://{local}/v1/health");
    println!("relayd: metrics http://{local}/metrics");
    for interface in &cli.xdp_interfaces {
        println!("relayd: xdp     {interface} ({} mode)", cli.xdp_mode);
    }
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP service failed")?;
    if let Some(xdp) = xdp {
        xdp.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .detach_all()?;
    }
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
