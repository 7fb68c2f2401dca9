//! relayd: the media relay daemon.
//!
//! Reads an optional TOML file (`--config`, example in `deploy/relayd.toml`), lets flags
//! override it, starts the socket datapath and the control API, and with XDP interfaces
//! configured loads and attaches the XDP program. SIGINT/SIGTERM stop it cleanly (XDP detached).

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use anyhow::Context as _;
use clap::Parser;
use relay_userspace::{
    afxdp::{AfXdpDatapath, AfXdpOptions},
    api::{self, ApiState},
    config::{Config, DatapathKind},
    datapath::{sys, DatapathOptions, SocketDatapath},
    relay::Relay,
    xdp::{AttachMode, RelayXdp},
    xdp_flows::XdpFlows,
};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

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

/// The bearer token: `RELAYD_TOKEN`, else the token file, else a fresh one written there.
fn token(config: &Config) -> anyhow::Result<String> {
    if let Ok(token) = std::env::var("RELAYD_TOKEN") {
        anyhow::ensure!(
            token.len() >= 16,
            "RELAYD_TOKEN must be at least 16 characters"
        );
        return Ok(token);
    }
    let path = &config.http.token_file;
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim().to_owned();
            anyhow::ensure!(
                token.len() >= 16,
                "{} holds a token shorter than 16 characters",
                path.display()
            );
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use base64::Engine as _;
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes)
                .map_err(|e| anyhow::anyhow!("the OS random generator failed: {e}"))?;
            let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            write_secret(path, &token)
                .with_context(|| format!("cannot write the token file {}", path.display()))?;
            println!(
                "relayd: generated an API token, saved to {}: {token}",
                path.display()
            );
            Ok(token)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read the token file {}", path.display())),
    }
}

fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{secret}")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = configuration(&cli)?;
    let token = token(&config)?;
    match sys::raise_nofile_limit() {
        Ok(limit) => info!(limit, "open-file limit"),
        Err(e) => warn!(%e, "cannot raise the open-file limit"),
    }
    let xdp = if config.datapath.xdp_interfaces.is_empty() {
        None
    } else {
        let mut xdp = RelayXdp::load()?;
        for interface in &config.datapath.xdp_interfaces {
            // On error, dropping `xdp` detaches from the interfaces attached so far.
            xdp.attach(interface, config.datapath.xdp_mode.into())?;
            if config.datapath.kind == DatapathKind::Xdp {
                prepare_forwarding(&mut xdp, interface)?;
            }
        }
        Some(Arc::new(Mutex::new(xdp)))
    };
    let workers = if config.datapath.workers == 0 {
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    } else {
        config.datapath.workers
    };
    let datapath = SocketDatapath::start(&DatapathOptions {
        workers,
        cpus: config.datapath.cpus.clone(),
        batch: config.datapath.batch,
    })
    .context("cannot start the socket datapath")?;
    let listen = config.http.listen;
    let max_body = config.http.max_body_bytes;
    let xdp_interfaces = config.datapath.xdp_interfaces.clone();
    let xdp_mode = config.datapath.xdp_mode;
    let pin_flows = config.datapath.kind == DatapathKind::Xdp;
    let workers = start_workers(&config, xdp.as_ref())?;
    let mut relay = Relay::new(config, datapath);
    if let (true, Some(xdp)) = (pin_flows, &xdp) {
        relay = relay.with_xdp_flows(XdpFlows::new(Arc::clone(xdp), workers.clone()));
        if workers.is_some() {
            info!("flows with settled peers are pinned in XDP: plain ones forwarded there, SRTP ones through AF_XDP workers");
        } else {
            info!("plain flows with settled peers are forwarded in XDP; SRTP flows stay on the socket datapath");
        }
    }
    let relay = Arc::new(relay);
    let state = ApiState::new(Arc::clone(&relay), token, xdp.clone()).with_workers(workers.clone());
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
    let timeouts = {
        let relay = Arc::clone(&relay);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let relay = Arc::clone(&relay);
                let _ = tokio::task::spawn_blocking(move || {
                    relay.sync_learned_peers();
                    relay.check_media_timeouts()
                })
                .await;
            }
        })
    };
    axum::serve(listener, api::router(state, max_body))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP service failed")?;
    timeouts.abort();
    // The relay (and its flows) first, then the workers, then the program.
    drop(relay);
    drop(workers);
    if let Some(xdp) = xdp {
        xdp.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .detach_all()?;
    }
    info!("relayd stopped");
    Ok(())
}

/// The AF_XDP workers, with the xdp datapath and `xdp_workers > 0`.
fn start_workers(
    config: &Config,
    xdp: Option<&Arc<Mutex<RelayXdp>>>,
) -> anyhow::Result<Option<Arc<AfXdpDatapath>>> {
    let (Some(xdp), DatapathKind::Xdp) = (xdp, config.datapath.kind) else {
        return Ok(None);
    };
    if config.datapath.xdp_workers == 0 {
        return Ok(None);
    }
    let workers = AfXdpDatapath::start(
        &AfXdpOptions {
            interfaces: config.datapath.xdp_interfaces.clone(),
            workers: config.datapath.xdp_workers,
            cpus: config.datapath.xdp_cpus.clone(),
            batch: config.datapath.xdp_batch,
            ring_size: config.datapath.xdp_ring_size,
            bind: config.datapath.xdp_bind.into(),
        },
        Arc::clone(xdp),
    )
    .context("cannot start the AF_XDP workers")?;
    Ok(Some(Arc::new(workers)))
}

/// Lets XDP redirect out of `interface` and answer `bpf_fib_lookup` there (which needs IP
/// forwarding enabled on it).
fn prepare_forwarding(xdp: &mut RelayXdp, interface: &str) -> anyhow::Result<()> {
    let name = std::ffi::CString::new(interface).context("interface name")?;
    // SAFETY: a valid NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    anyhow::ensure!(index != 0, "no network interface named {interface:?}");
    xdp.add_egress(index)?;
    let knob = format!("/proc/sys/net/ipv4/conf/{interface}/forwarding");
    std::fs::write(&knob, "1").with_context(|| {
        format!("cannot enable IP forwarding ({knob}), which XDP forwarding needs")
    })?;
    // IPv6 may be disabled on the host or the interface: then IPv6 flows stay in userspace.
    let knob6 = format!("/proc/sys/net/ipv6/conf/{interface}/forwarding");
    if let Err(e) = std::fs::write(&knob6, "1") {
        warn!(interface, %e, "cannot enable IPv6 forwarding; IPv6 flows stay on the socket datapath");
    }
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
