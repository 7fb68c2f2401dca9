//! relayd's control plane as a library: everything `relayd` starts besides its HTTP listener
//! (the open-file limit, the XDP program and its pins, the AF_XDP workers, the socket
//! datapath, the session store, restored sessions, the media-timeout ticker), so that the
//! daemon and an embedding process (sip-controller's `[relay] mode = "embedded"`, the
//! single-process shape of sipwise rtpengine) start and stop a relay the same way.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use anyhow::Context as _;
use tracing::{info, warn};

use crate::{
    afxdp::{AfXdpDatapath, AfXdpOptions},
    api::ApiState,
    config::{Config, DatapathKind},
    datapath::{sys, DatapathOptions, SocketDatapath},
    relay::Relay,
    state::SessionStore,
    xdp::RelayXdp,
    xdp_flows::XdpFlows,
};

/// A running relay: its control plane, datapaths and background ticker.
///
/// [`Service::stop`] releases them in order (the relay and its flows, then the AF_XDP
/// workers, then the XDP program, kept attached or detached as configured).
pub struct Service {
    relay: Arc<Relay>,
    xdp: Option<Arc<Mutex<RelayXdp>>>,
    workers: Option<Arc<AfXdpDatapath>>,
    ticker: tokio::task::JoinHandle<()>,
    keep_on_exit: bool,
    pin_dir: std::path::PathBuf,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("xdp", &self.xdp.is_some())
            .field("afxdp_workers", &self.workers.is_some())
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Starts a relay for a validated `config`. Must run inside a tokio runtime (the
    /// media-timeout ticker is a task).
    ///
    /// # Errors
    /// What could not start: the XDP program or its pins, the AF_XDP workers, the socket
    /// datapath, the state directory.
    pub fn start(config: Config) -> anyhow::Result<Self> {
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
        let ticker = {
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
        Ok(Self {
            relay,
            xdp,
            workers,
            ticker,
            keep_on_exit,
            pin_dir,
        })
    }

    /// The control plane.
    pub fn relay(&self) -> &Arc<Relay> {
        &self.relay
    }

    /// The HTTP API's state over this relay, with `token` as its bearer token.
    pub fn api_state(&self, token: String) -> ApiState {
        ApiState::new(Arc::clone(&self.relay), token, self.xdp.clone())
            .with_workers(self.workers.clone())
    }

    /// Stops the ticker and releases the relay, the AF_XDP workers and the XDP program.
    /// Clones of [`Service::relay`] held elsewhere keep the sessions' sockets open until they
    /// are dropped.
    ///
    /// # Errors
    /// Detaching or unpinning the XDP program failed.
    pub fn stop(self) -> anyhow::Result<()> {
        self.ticker.abort();
        // The relay (and its flows) first, then the workers, then the program.
        drop(self.relay);
        drop(self.workers);
        if let Some(xdp) = self.xdp {
            release_xdp(
                &mut xdp.lock().unwrap_or_else(PoisonError::into_inner),
                self.keep_on_exit,
                &self.pin_dir,
            )?;
        }
        Ok(())
    }
}

/// The bearer token of the HTTP API: `RELAYD_TOKEN`, else the token file, else a fresh one written there.
pub fn token(config: &Config) -> anyhow::Result<String> {
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
            busy_poll: config.datapath.xdp_busy_poll,
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
