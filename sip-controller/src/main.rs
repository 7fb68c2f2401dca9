//! sip-controller binary: loads the configuration, starts the SIP transports, the HTTP API and
//! the relayd client, and drives the IO-free B2BUA core ([`sip_controller::b2bua::Core`]) from
//! one task: transport events, relayd replies and events, and the core's timers in; bytes,
//! relay requests and call records out.

/// mimalloc instead of glibc malloc (why: the workspace Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    collections::HashMap,
    io::Write as _,
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use sip_controller::{
    api::{self, ApiState, CallStore, Metrics},
    b2bua::{Core, Identity, Output, RelayRequest},
    config::{Config, RelayMode},
    embedded_relay::{self, EmbeddedRelay},
    relay_client::RelayClient,
    routing::Resolved,
    sip::Host,
    transport::{
        tls::{CertificateFiles, ClientCertificatePolicy, ServerCertificate, TlsSettings},
        Outbound, Transport, TransportConfig, TransportEvent, TransportLayer,
    },
};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// TLS SIP B2BUA with per-leg SDES-SRTP, programming relayd.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML); without it, loopback defaults.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// SIP over UDP listen address (replaces the file's list).
    #[arg(long)]
    sip_udp: Vec<SocketAddr>,
    /// SIP over TCP listen address.
    #[arg(long)]
    sip_tcp: Vec<SocketAddr>,
    /// SIP over TLS listen address.
    #[arg(long)]
    sip_tls: Vec<SocketAddr>,
    /// HTTP API listen address.
    #[arg(long)]
    api_listen: Option<SocketAddr>,
    /// relayd control API URL.
    #[arg(long)]
    relay_url: Option<String>,
    /// File with relayd's bearer token.
    #[arg(long)]
    relay_token_file: Option<PathBuf>,
    /// Directory for the generated TLS certificate.
    #[arg(long)]
    tls_state_dir: Option<PathBuf>,
    /// CDR file (one JSON line per finished call).
    #[arg(long)]
    cdr: Option<PathBuf>,
    /// Verify outbound TLS servers (false: lab trunks only).
    #[arg(long)]
    tls_verify_server: Option<bool>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        // Logs on stderr: stdout carries only the ready line that scripts and tests read.
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sip-controller: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sip-controller: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(args: &Args) -> Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if !args.sip_udp.is_empty() {
        config.sip.udp.clone_from(&args.sip_udp);
    }
    if !args.sip_tcp.is_empty() {
        config.sip.tcp.clone_from(&args.sip_tcp);
    }
    if !args.sip_tls.is_empty() {
        config.sip.tls.clone_from(&args.sip_tls);
    }
    if let Some(listen) = args.api_listen {
        config.api.listen = listen;
    }
    if let Some(url) = &args.relay_url {
        config.relay.url.clone_from(url);
    }
    if let Some(file) = &args.relay_token_file {
        config.relay.token_file.clone_from(file);
    }
    if let Some(dir) = &args.tls_state_dir {
        config.tls.state_dir.clone_from(dir);
    }
    if let Some(cdr) = &args.cdr {
        config.cdr.path = Some(cdr.clone());
    }
    if let Some(verify) = args.tls_verify_server {
        config.tls.verify_server = verify;
    }
    config.validate()?;
    Ok(config)
}

fn transport_config(config: &Config) -> TransportConfig {
    let tls = &config.tls;
    let certificate = if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        ServerCertificate::Files(CertificateFiles {
            cert_file: cert.clone(),
            key_file: key.clone(),
        })
    } else {
        let mut names = vec!["localhost".to_owned()];
        if let Some(host) = &config.sip.advertised_host {
            names.push(host.clone());
        }
        ServerCertificate::SelfSigned {
            state_dir: tls.state_dir.clone(),
            subject_alt_names: names,
        }
    };
    let client_certificates = match (&tls.client_ca, tls.require_client_cert) {
        (Some(ca), true) => ClientCertificatePolicy::Required {
            ca_file: ca.clone(),
        },
        (Some(ca), false) => ClientCertificatePolicy::Optional {
            ca_file: ca.clone(),
        },
        (None, _) => ClientCertificatePolicy::None,
    };
    let mut settings = TlsSettings::self_signed(tls.state_dir.clone());
    settings.certificate = certificate;
    settings.client_certificates = client_certificates;
    settings.trusted_ca_files.clone_from(&tls.ca_files);
    settings.tls_verify_server = tls.verify_server;
    if !tls.verify_server {
        warn!("tls.verify_server = false: outbound TLS servers are not verified (lab use only)");
    }
    TransportConfig {
        udp: config.sip.udp.clone(),
        tcp: config.sip.tcp.clone(),
        tls: config.sip.tls.clone(),
        tls_settings: Some(settings),
        ..TransportConfig::default()
    }
}

async fn resolve_trunks(config: &Config) -> Resolved {
    let mut resolved = Resolved::new();
    for trunk in &config.trunks {
        let Ok(uri) = sip_controller::sip::Uri::parse(&trunk.uri) else {
            continue;
        };
        if let Some(Host::Domain(name)) = uri.host() {
            match tokio::net::lookup_host((name.as_str(), 0)).await {
                Ok(mut addrs) => {
                    if let Some(addr) = addrs.next() {
                        resolved.insert(name.to_ascii_lowercase(), addr.ip());
                    }
                }
                Err(e) => {
                    warn!(trunk = %trunk.name, host = %name, error = %e, "trunk host does not resolve; calls to it get 503");
                }
            }
        }
    }
    resolved
}

fn relay_token(config: &Config) -> Result<String> {
    if let Ok(token) = std::env::var("RELAYD_TOKEN") {
        return Ok(token.trim().to_owned());
    }
    let path = &config.relay.token_file;
    let token = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading relayd's token from {} (set relay.token_file or RELAYD_TOKEN)",
            path.display()
        )
    })?;
    Ok(token.trim().to_owned())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

enum Feedback {
    Relay {
        call: String,
        result: Result<Option<sip_controller::relay_client::SessionView>, String>,
    },
    SendFailed(sip_controller::sip::transaction::TxId),
    MediaTimeout(String),
    RelayBoot(String),
}

#[allow(clippy::too_many_lines)]
async fn run(args: Args) -> Result<()> {
    let config = Arc::new(load_config(&args)?);
    // Tasks that hold the relay: stopped before an embedded relay is (so it really stops).
    let mut relay_tasks: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let (relay, embedded) = match config.relay.mode {
        RelayMode::Http => (
            RelayClient::new(&config.relay.url, relay_token(&config)?)?,
            None,
        ),
        RelayMode::Embedded => {
            let (relay, service, api) = start_embedded_relay(&config).await?;
            relay_tasks.extend(api);
            (relay, Some(service))
        }
    };
    let ng_addrs = if config.ng.udp.is_empty() && config.ng.tcp.is_empty() {
        None
    } else {
        // Bound before anything else runs: a port in use stops startup with a clear error.
        let server = sip_controller::ng::NgServer::bind(config.ng.clone())
            .await
            .context("starting the NG control protocol server ([ng])")?;
        let addrs = (server.udp_addrs(), server.tcp_addrs());
        info!(udp = ?addrs.0, tcp = ?addrs.1, "NG control protocol listening");
        let relay = relay.clone();
        relay_tasks.push(tokio::spawn(async move {
            server.run(relay).await;
        }));
        Some(addrs)
    };
    let (transport, mut events) = TransportLayer::start(transport_config(&config))
        .await
        .context("starting the SIP transports")?;
    let transport = Arc::new(transport);
    let first = |t: Transport| transport.local_addrs(t).first().copied();
    let (udp, tcp, tls) = (
        first(Transport::Udp),
        first(Transport::Tcp),
        first(Transport::Tls),
    );
    let host = config.sip.advertised_host.clone().unwrap_or_else(|| {
        udp.or(tcp).or(tls).map_or_else(
            || "127.0.0.1".to_owned(),
            |a| match a.ip() {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                ip @ std::net::IpAddr::V4(_) => ip.to_string(),
            },
        )
    });
    let identity = Identity {
        host,
        udp: udp.map(|a| a.port()),
        tcp: tcp.map(|a| a.port()),
        tls: tls.map(|a| a.port()),
    };
    let resolved = resolve_trunks(&config).await;
    let mut core = Core::new(Arc::clone(&config), resolved, identity.clone())
        .map_err(anyhow::Error::msg)
        .context("building the B2BUA")?;

    let calls = Arc::new(Mutex::new(CallStore::default()));
    let metrics = Arc::new(Metrics::default());
    let api_listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("binding the HTTP API on {}", config.api.listen))?;
    let api_addr = api_listener.local_addr()?;
    let router = api::router(ApiState::new(Arc::clone(&calls), Arc::clone(&metrics)));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(api_listener, router).await {
            error!(error = %e, "HTTP API stopped");
        }
    });
    let mut cdr = match &config.cdr.path {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening the CDR file {}", path.display()))?,
        ),
        None => None,
    };
    info!(
        udp = ?udp, tcp = ?tcp, tls = ?tls, api = %api_addr, relay = ?config.relay.mode, relay_url = %config.relay.url,
        "sip-controller {} ready", sip_controller::VERSION
    );
    // Announced on stdout for scripts and tests, the SIP line last (it means "ready"); a
    // closed stdout must not take the controller down, so write errors are ignored.
    let mut stdout = std::io::stdout().lock();
    if let Some((ng_udp, ng_tcp)) = &ng_addrs {
        let _ = writeln!(
            stdout,
            "sip-controller: NG (rtpengine protocol) udp {ng_udp:?} tcp {ng_tcp:?}"
        );
    }
    let _ = writeln!(
        stdout,
        "sip-controller: SIP udp {} tcp {} tls {}; HTTP API http://{api_addr}/v1/calls",
        udp.map_or_else(|| "-".to_owned(), |a| a.to_string()),
        tcp.map_or_else(|| "-".to_owned(), |a| a.to_string()),
        tls.map_or_else(|| "-".to_owned(), |a| a.to_string()),
    );
    let _ = stdout.flush();
    drop(stdout);

    let (feedback_tx, mut feedback) = mpsc::channel::<Feedback>(4096);
    // relayd health (boot id) and media-timeout events.
    {
        let relay = relay.clone();
        let sink = feedback_tx.clone();
        let interval = Duration::from_millis(config.relay.poll_interval_ms);
        relay_tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                match relay.health().await {
                    Ok(health) => {
                        if sink
                            .send(Feedback::RelayBoot(health.boot_id))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => warn!(error = %e, "relayd health check failed"),
                }
            }
        }));
    }
    {
        let relay = relay.clone();
        let sink = feedback_tx.clone();
        relay_tasks.push(tokio::spawn(async move {
            let (timeouts_tx, mut timeouts) = mpsc::channel::<String>(1024);
            let forward = {
                let sink = sink.clone();
                tokio::spawn(async move {
                    while let Some(session) = timeouts.recv().await {
                        if sink.send(Feedback::MediaTimeout(session)).await.is_err() {
                            return;
                        }
                    }
                })
            };
            loop {
                if let Err(e) = relay.follow_events(&timeouts_tx).await {
                    warn!(error = %e, "relayd event stream failed; reconnecting");
                }
                if sink.is_closed() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            forward.abort();
        }));
    }

    // Ordered senders per stream destination; UDP goes out inline.
    let mut stream_senders: HashMap<(Transport, SocketAddr), StreamSender> = HashMap::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let deadline = core.poll_timeout();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => {
                info!("shutting down");
                break;
            }
            event = events.recv() => {
                let Some(event) = event else { bail!("the SIP transports stopped") };
                match event {
                    TransportEvent::Message(inbound) => core.handle_inbound(Instant::now(), unix_ms(), &inbound),
                    TransportEvent::Closed { connection, source, transport } => {
                        // The peer's connection is gone: drop its sender (its task ends once
                        // the queue drains), or every client port ever seen keeps one.
                        stream_senders.remove(&(transport, source));
                        core.handle_connection_closed(connection, source, transport);
                    }
                }
            }
            Some(item) = feedback.recv() => match item {
                Feedback::Relay { call, result } => core.handle_relay_reply(Instant::now(), unix_ms(), &call, result),
                Feedback::SendFailed(tx) => core.handle_send_failure(Instant::now(), unix_ms(), tx),
                Feedback::MediaTimeout(session) => core.handle_media_timeout(Instant::now(), unix_ms(), &session),
                Feedback::RelayBoot(boot) => core.handle_relay_boot(&boot),
            },
            () = sleep => core.handle_timeout(Instant::now(), unix_ms()),
        }
        while let Some(output) = core.poll_output() {
            match output {
                Output::Send {
                    outbound,
                    transaction,
                } => {
                    if outbound.transport == Transport::Udp
                        && !transport.switches_to_tcp(outbound.is_request, outbound.bytes.len())
                    {
                        if let Err(e) = transport.send(outbound).await {
                            warn!(error = %e, "UDP send failed");
                            if let Some(tx) = transaction {
                                core.handle_send_failure(Instant::now(), unix_ms(), tx);
                            }
                        }
                        continue;
                    }
                    let key = (outbound.transport, outbound.destination);
                    let sender = stream_senders.entry(key).or_insert_with(|| {
                        spawn_stream_sender(Arc::clone(&transport), feedback_tx.clone())
                    });
                    if sender.try_send((outbound, transaction)).is_err() {
                        warn!(destination = %key.1, "stream send queue full or closed; message dropped");
                        if let Some(tx) = transaction {
                            core.handle_send_failure(Instant::now(), unix_ms(), tx);
                        }
                        stream_senders.remove(&key);
                    }
                }
                Output::Relay { call, request } => {
                    let relay = relay.clone();
                    let sink = feedback_tx.clone();
                    tokio::spawn(async move {
                        let result = match request {
                            RelayRequest::Put(spec) => {
                                relay.put_session(&call, &spec).await.map(Some)
                            }
                            RelayRequest::Delete => relay.delete_session(&call).await,
                        };
                        let result = result.map_err(|e| e.to_string());
                        let _ = sink.send(Feedback::Relay { call, result }).await;
                    });
                }
                Output::CallUpdated(record) => {
                    calls
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .update(record);
                }
                Output::CallEnded(record) => {
                    let line = record.cdr_line();
                    info!(target: "cdr", "{line}");
                    if let Some(file) = cdr.as_mut() {
                        if let Err(e) = writeln!(file, "{line}") {
                            error!(error = %e, "writing the CDR failed");
                        }
                    }
                    calls
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .finish(record);
                }
            }
        }
        publish_stats(&core, &metrics);
    }
    transport.shutdown();
    if let Some(service) = embedded {
        // Every holder of the relay goes first (relay requests in flight finish within their
        // deadline), so stopping it closes the media sockets and joins the datapath workers.
        for task in &relay_tasks {
            task.abort();
        }
        for task in relay_tasks {
            let _ = task.await;
        }
        drop(relay);
        service.stop().context("stopping the embedded relay")?;
    }
    Ok(())
}

/// `[relay] mode = "embedded"`: starts relayd's control plane and datapath in this process
/// and, with `relay.relayd_api`, relayd's HTTP API beside it.
async fn start_embedded_relay(
    config: &Config,
) -> Result<(
    RelayClient,
    relay_userspace::service::Service,
    Option<tokio::task::JoinHandle<()>>,
)> {
    let relayd = embedded_relay::load_config(&config.relay.relayd_config)?;
    let api = config.relay.relayd_api.then(|| {
        (
            relayd.http.listen,
            relayd.http.max_body_bytes,
            relay_userspace::service::token(&relayd),
        )
    });
    let service =
        relay_userspace::service::Service::start(relayd).context("starting the embedded relay")?;
    let api_task = if let Some((listen, max_body, token)) = api {
        let state = service.api_state(token?);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the embedded relay's HTTP API on {listen}"))?;
        let local = listener.local_addr()?;
        println!("sip-controller: relay embedded; relayd API http://{local}/v1/");
        Some(tokio::spawn(async move {
            if let Err(e) =
                axum::serve(listener, relay_userspace::api::router(state, max_body)).await
            {
                error!(error = %e, "the embedded relay's HTTP API stopped");
            }
        }))
    } else {
        println!("sip-controller: relay embedded");
        None
    };
    let relay = RelayClient::embedded(EmbeddedRelay::new(&service));
    Ok((relay, service, api_task))
}

/// The ordered send queue of one stream destination: message and the transaction to fail
/// when sending it fails.
type StreamSender = mpsc::Sender<(Outbound, Option<sip_controller::sip::transaction::TxId>)>;

fn spawn_stream_sender(
    transport: Arc<TransportLayer>,
    feedback: mpsc::Sender<Feedback>,
) -> StreamSender {
    let (tx, mut rx): (StreamSender, _) = mpsc::channel(1024);
    tokio::spawn(async move {
        while let Some((outbound, transaction)) = rx.recv().await {
            let destination = outbound.destination;
            if let Err(e) = transport.send(outbound).await {
                warn!(%destination, error = %e, "SIP send failed");
                if let Some(id) = transaction {
                    let _ = feedback.send(Feedback::SendFailed(id)).await;
                }
            }
        }
    });
    tx
}

fn publish_stats(core: &Core, metrics: &Metrics) {
    use std::sync::atomic::Ordering::Relaxed;
    let s = core.stats();
    metrics.calls_started.store(s.calls_started, Relaxed);
    metrics.calls_answered.store(s.calls_answered, Relaxed);
    metrics.calls_failed.store(s.calls_failed, Relaxed);
    metrics
        .calls_secure_end_to_end
        .store(s.calls_secure, Relaxed);
    metrics.requests_rejected.store(s.rejected, Relaxed);
    metrics.parse_errors.store(s.parse_errors, Relaxed);
    metrics.relay_errors.store(s.relay_errors, Relaxed);
    metrics.relay_restarts.store(s.relay_restarts, Relaxed);
    metrics.registrations.store(s.registrations, Relaxed);
    metrics.auth_failures.store(s.auth_failures, Relaxed);
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = ctrl_c.await;
        return;
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
