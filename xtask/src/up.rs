//! `cargo xtask up`: setup, build, and run the stack in the foreground on loopback defaults.
//!
//! The stack is relayd (control API, health and metrics on 127.0.0.1:8740, media ports
//! 30000-39999 on 127.0.0.1, the socket datapath; the API token is kept in `relayd.token` at
//! the workspace root) and sip-controller (SIP on UDP/TCP 127.0.0.1:5060 and TLS
//! 127.0.0.1:5061 with a self-signed certificate kept in `sip-controller-state/`, its HTTP API
//! on 127.0.0.1:8090, the rtpengine NG protocol on UDP 127.0.0.1:2223, CDRs appended to `sip-controller-state/cdr.jsonl`; the loopback profile
//! lets anything on 127.0.0.0/8 register and call registered users without credentials).
//! Ctrl-C (or SIGTERM to xtask) stops every process cleanly and waits for it.

use std::{
    process::{Child, Command},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result};
use clap::Args;

use crate::{run_step, setup, workspace_root};

#[derive(Debug, Args)]
pub struct UpArgs {
    /// relayd's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8740")]
    relayd_http: String,
    /// sip-controller's HTTP API address.
    #[arg(long, default_value = "127.0.0.1:8090")]
    controller_http: String,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn run(args: &UpArgs) -> Result<()> {
    setup::run()?;
    run_step(
        "cargo build --bins",
        Command::new("cargo").args(["build", "--workspace", "--bins", "--locked"]),
    )?;
    // A handler (not SIG_IGN, which children would inherit): the terminal's Ctrl-C reaches the
    // children directly; xtask only notes it and then waits for them to exit.
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            request_stop as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            request_stop as *const () as libc::sighandler_t,
        );
    }
    let bin = workspace_root().join("target/debug");
    let mut children: Vec<(&str, Child)> = Vec::new();
    let token_file = workspace_root().join("relayd.token");
    let relayd = Command::new(bin.join("relayd"))
        .args(["--http-listen", &args.relayd_http])
        .arg("--token-file")
        .arg(&token_file)
        .spawn()
        .context("starting relayd")?;
    children.push(("relayd", relayd));
    // The controller reads relayd's token at start: wait for relayd to write it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !token_file.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let state = workspace_root().join("sip-controller-state");
    std::fs::create_dir_all(&state).context("creating sip-controller-state")?;
    let controller = Command::new(bin.join("sip-controller"))
        .args(["--api-listen", &args.controller_http])
        .args(["--relay-url", &format!("http://{}", args.relayd_http)])
        .arg("--relay-token-file")
        .arg(&token_file)
        .arg("--tls-state-dir")
        .arg(&state)
        .arg("--cdr")
        .arg(state.join("cdr.jsonl"))
        .spawn()
        .context("starting sip-controller")?;
    children.push(("sip-controller", controller));
    println!(
        "stack: relayd control API http://{}/v1/ (health: /v1/health, metrics: /metrics, \
         OpenAPI: /v1/openapi.json); media ports 127.0.0.1:30000-39999",
        args.relayd_http
    );
    println!(
        "stack: API bearer token in {} (curl -H \"Authorization: Bearer $(cat {})\" \
         http://{}/v1/health)",
        token_file.display(),
        token_file.display(),
        args.relayd_http
    );
    println!(
        "stack: sip-controller SIP udp+tcp 127.0.0.1:5060, tls 127.0.0.1:5061 (sips:, \
         ;transport=tls; certificate {}); HTTP API http://{}/v1/calls (health: /v1/health, \
         metrics: /metrics); NG (rtpengine protocol) udp 127.0.0.1:2223; CDRs in {}",
        state.join("sip-tls-self-signed.crt").display(),
        args.controller_http,
        state.join("cdr.jsonl").display()
    );
    println!("stack: running in the foreground; Ctrl-C stops it");

    let mut failed = None;
    while !STOP.load(Ordering::SeqCst) {
        for (name, child) in &mut children {
            if let Some(status) = child.try_wait()? {
                failed = Some(format!("{name} exited ({status})"));
            }
        }
        if failed.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for (name, child) in &mut children {
        if child.try_wait()?.is_none() {
            // SAFETY: kill with our own child's pid and a valid signal.
            unsafe { libc::kill(child.id().try_into().unwrap_or(0), libc::SIGTERM) };
            let status = child.wait()?;
            println!("stack: {name} stopped ({status})");
        }
    }
    match failed {
        Some(reason) => anyhow::bail!("{reason}; the stack was stopped"),
        None => Ok(()),
    }
}
