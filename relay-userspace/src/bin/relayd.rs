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
    state::SessionStore,
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
    let xdp = load_xdp(&config)?;
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
    let store = session_store(&config)?;
    let keep_on_exit = config.datapath.xdp_keep_on_exit;
    let pin_dir = config.datapath.xdp_pin_dir.clone();
    let mut relay = Relay::new(config, datapath);
    if let Some(store) = store {
        relay = relay.with_store(store);
    }
    if let (true, Some(xdp)) = (pin_flows, &xdp) {
        let mut flows = XdpFlows::new(Arc::clone(xdp), workers.clone());
        let found = flows.adopt_existing();
        if found > 0 {
            info!(flows = found, "XDP flows found pinned by a previous relayd");
        }
        relay = relay.with_xdp_flows(flows);
        if workers.is_some() {
            info!("flows with settled peers are pinned in XDP: plain ones forwarded there, SRTP ones through AF_XDP workers");
        } else {
            info!("plain flows with settled peers are forwarded in XDP; SRTP flows stay on the socket datapath");
        }
    }
    relay.restore();
    let stale = relay.drop_unadopted_flows();
    if stale > 0 {
        info!(
            flows = stale,
            "stale XDP flows of sessions that were not restored removed"
        );
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
        release_xdp(
            &mut xdp.lock().unwrap_or_else(PoisonError::into_inner),
            keep_on_exit,
            &pin_dir,
        )?;
    }
    info!("relayd stopped");
    Ok(())
}

/// The session store of `[state] dir`, if one is configured.
fn session_store(config: &Config) -> anyhow::Result<Option<SessionStore>> {
    if config.state.dir.as_os_str().is_empty() {
        if config.datapath.kind == DatapathKind::Xdp && config.datapath.xdp_keep_on_exit {
            warn!("no [state] dir: a restarted relayd cannot re-adopt the flows XDP carries");
        }
        return Ok(None);
    }
    let store = SessionStore::open(&config.state.dir).with_context(|| {
        format!(
            "cannot open the state directory {}",
            config.state.dir.display()
        )
    })?;
    Ok(Some(store))
}

/// On exit: leaves a pinned program and its flows for the next relayd, or detaches and
/// unpins everything.
fn release_xdp(
    xdp: &mut RelayXdp,
    keep_on_exit: bool,
    pin_dir: &std::path::Path,
) -> anyhow::Result<()> {
    if xdp.pinned() && keep_on_exit {
        // Dropping it leaves the pinned links attached and the maps pinned.
        info!("XDP stays attached with its flows until the next relayd adopts them");
        return Ok(());
    }
    xdp.detach_all()?;
    if xdp.pinned() {
        xdp.unpin_maps()?;
        // The now empty version directory and pin directory (never anything else).
        let version = pin_dir.join(format!("v{}", relay_common::MAP_ABI_VERSION));
        let _ = std::fs::remove_dir(&version);
        let _ = std::fs::remove_dir(pin_dir);
    }
    Ok(())
}

/// Loads and attaches the XDP program on the configured interfaces. With the xdp datapath and
/// a pin directory, maps and links are pinned under `<pin dir>/v<map ABI>/` (adopting those a
/// previous relayd left), so the program and its flows outlive this process.
fn load_xdp(config: &Config) -> anyhow::Result<Option<Arc<Mutex<RelayXdp>>>> {
    let datapath = &config.datapath;
    if datapath.xdp_interfaces.is_empty() {
        return Ok(None);
    }
    let pins = (datapath.kind == DatapathKind::Xdp && !datapath.xdp_pin_dir.as_os_str().is_empty())
        .then(|| {
            datapath
                .xdp_pin_dir
                .join(format!("v{}", relay_common::MAP_ABI_VERSION))
        });
    let mut xdp = match &pins {
        Some(dir) => {
            ensure_bpffs(dir)?;
            RelayXdp::load_pinned(&dir.join("maps"))?
        }
        None => RelayXdp::load()?,
    };
    // From here a failed start leaves pinned links and maps as they were: a previous relayd's
    // flows keep forwarding.
    xdp.keep_on_drop(pins.is_some() && datapath.xdp_keep_on_exit);
    for interface in &datapath.xdp_interfaces {
        match &pins {
            Some(dir) => {
                let links = dir.join("links");
                std::fs::create_dir_all(&links)
                    .with_context(|| format!("cannot create {}", links.display()))?;
                let adopted =
                    xdp.attach_pinned(interface, datapath.xdp_mode.into(), &links.join(interface))?;
                if adopted {
                    info!(interface, "XDP link of a previous relayd adopted");
                }
            }
            None => xdp.attach(interface, datapath.xdp_mode.into())?,
        }
        if datapath.kind == DatapathKind::Xdp {
            prepare_forwarding(&mut xdp, interface)?;
        }
    }
    Ok(Some(Arc::new(Mutex::new(xdp))))
}

/// Makes sure `dir` can hold BPF pins: on a bpffs, mounting one on /sys/fs/bpf when the
/// directory is under it and nothing is mounted there.
fn ensure_bpffs(dir: &std::path::Path) -> anyhow::Result<()> {
    const BPF_FS_MAGIC: libc::c_long = 0xcafe_4a11;
    let on_bpffs = |path: &std::path::Path| {
        let mut probe = path;
        while !probe.exists() {
            match probe.parent() {
                Some(parent) => probe = parent,
                None => return false,
            }
        }
        let Ok(c) = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes()) else {
            return false;
        };
        // SAFETY: all-zero is a valid statfs; the kernel fills it for a NUL-terminated path.
        let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let rc = unsafe { libc::statfs(c.as_ptr(), &raw mut stat) };
        rc == 0 && stat.f_type == BPF_FS_MAGIC
    };
    if on_bpffs(dir) {
        return Ok(());
    }
    let root = std::path::Path::new("/sys/fs/bpf");
    if dir.starts_with(root) && root.is_dir() {
        // SAFETY: mount(2) with valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                c"/sys/fs/bpf".as_ptr(),
                c"bpf".as_ptr(),
                0,
                c"mode=0700".as_ptr().cast(),
            )
        };
        if rc == 0 {
            info!("mounted bpffs on /sys/fs/bpf");
        }
        if on_bpffs(dir) {
            return Ok(());
        }
    }
    anyhow::bail!(
        "datapath.xdp_pin_dir {} is not on a bpffs (mount one: `mount -t bpf bpf /sys/fs/bpf`), \
         or set xdp_pin_dir = \"\" to run without pinning",
        dir.display()
    )
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
