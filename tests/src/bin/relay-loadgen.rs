//! `relay-loadgen`: sets up N calls on a media relay (relayd's HTTP API or the NG protocol),
//! sends paced RTP both ways with SRTP on one leg, verifies what comes back and reports rates,
//! loss and one-way latency; `--find-max` searches for the highest clean rate; `--overload`
//! drives the same calls at twice a rate, then at half of it, and counts the streams still
//! alive at the end.
//!
//! ```text
//! relay-loadgen --ng 127.0.0.1:2223 --calls 200 --pps 50 --duration 10 --cpu 0 --rx-cpu 0 --json
//! relay-loadgen --api http://127.0.0.1:8740 --token "$RELAYD_TOKEN" --find-max --calls 200
//! relay-loadgen --ng 127.0.0.1:2223 --calls 200 --overload 400 --json
//! ```

use std::{
    net::{IpAddr, SocketAddr},
    process::ExitCode,
    time::Duration,
};

use clap::{ArgGroup, Parser};
use srtp::Suite;
use tests::loadgen::{self, Config, Control, FindMaxParams, OverloadParams, Token};

/// RTP/SRTP load generator for media relays (relayd, rtpengine, our NG controller).
///
/// Each call has two endpoints on this host: A (SRTP, the carrier) and B (plain RTP, the PBX);
/// the relay bridges them. Traffic only goes to 127.0.0.0/8 or 198.18.0.0/15.
#[derive(Debug, Parser)]
#[command(name = "relay-loadgen", version)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent command-line switches, as clap models them"
)]
#[command(group(ArgGroup::new("control").required(true).args(["api", "ng"])))]
struct Args {
    /// relayd's control API base URL, e.g. `http://127.0.0.1:8740`.
    #[arg(long, value_name = "URL")]
    api: Option<String>,
    /// Bearer token for --api.
    #[arg(long, env = "RELAYD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// NG server (rtpengine or our controller), e.g. 127.0.0.1:2223.
    #[arg(long, value_name = "ADDR")]
    ng: Option<SocketAddr>,

    /// Concurrent calls (two streams each, one per direction).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=i64::from(loadgen::MAX_CALLS)))]
    calls: u32,
    /// Packets per second per stream and direction (the start rate with --find-max).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=loadgen::MAX_PPS))]
    pps: u64,
    /// Measured sending time in seconds (with --find-max, each step lasts --step-secs).
    #[arg(long, default_value = "10", value_name = "SECS", value_parser = parse_secs)]
    duration: Duration,
    /// Unmeasured sending before the measured window, in seconds.
    #[arg(long, default_value = "0", value_name = "SECS", value_parser = parse_secs)]
    warmup: Duration,
    /// Time to keep receiving after the last send, in seconds.
    #[arg(long, default_value = "1", value_name = "SECS", value_parser = parse_secs)]
    drain: Duration,
    /// RTP payload bytes (the packet is 12 bytes more).
    #[arg(long, default_value_t = 160, value_name = "BYTES")]
    payload: usize,
    /// SRTP suite on leg A.
    #[arg(long, default_value = "AES_CM_128_HMAC_SHA1_80", value_parser = parse_suite, conflicts_with = "plain")]
    suite: Suite,
    /// Plain RTP on both legs (no SRTP).
    #[arg(long)]
    plain: bool,
    /// Address endpoint A binds to.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    bind_a: IpAddr,
    /// Address endpoint B binds to.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    bind_b: IpAddr,
    /// Sender wake-up period in microseconds.
    #[arg(long, default_value_t = 200, value_name = "US", value_parser = clap::value_parser!(u64).range(100..=100_000))]
    tick_us: u64,
    /// Pin the sender thread to this CPU.
    #[arg(long, value_name = "N")]
    cpu: Option<usize>,
    /// Pin the receiver thread to this CPU.
    #[arg(long, value_name = "N")]
    rx_cpu: Option<usize>,

    /// Search for the highest per-stream rate (--calls fixed) with loss <= --max-loss:
    /// double the rate while clean, then bisect; each step sets up fresh calls (with rtpengine,
    /// run it with --delete-delay=0 so deleted calls free their ports at once).
    #[arg(long, conflicts_with = "overload")]
    find_max: bool,
    /// Measured seconds per find-max step.
    #[arg(long, default_value = "3", value_name = "SECS", value_parser = parse_secs, requires = "find_max")]
    step_secs: Duration,
    /// Most find-max steps.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=i64::from(loadgen::MAX_STEPS)), requires = "find_max")]
    max_steps: u32,
    /// Overload, then recovery, on the same calls (set up once): --overload-secs at twice this
    /// per-stream rate (e.g. the relay's max clean rate from --find-max), then --recover-secs at
    /// half of it; reports both phases and the streams alive (>= 90 % delivered) and dead
    /// (nothing delivered) in the last --alive-window-secs. A --warmup runs at this rate.
    #[arg(long, value_name = "PPS_PER_STREAM", value_parser = clap::value_parser!(u64).range(2..=loadgen::MAX_PPS / 2), conflicts_with_all = ["pps", "duration"])]
    overload: Option<u64>,
    /// Seconds at twice the --overload rate.
    #[arg(long, default_value = "10", value_name = "SECS", value_parser = parse_secs, requires = "overload")]
    overload_secs: Duration,
    /// Seconds at half the --overload rate, right after the overload.
    #[arg(long, default_value = "10", value_name = "SECS", value_parser = parse_secs, requires = "overload")]
    recover_secs: Duration,
    /// The final stretch of the recovery in which streams are judged alive or dead, in seconds.
    #[arg(long, default_value = "5", value_name = "SECS", value_parser = parse_secs, requires = "overload")]
    alive_window_secs: Duration,

    /// Highest loss ratio of a clean find-max step (0.001 = 0.1 %).
    #[arg(long, default_value_t = 0.001, value_parser = parse_ratio)]
    max_loss: f64,

    /// Print the report as JSON on stdout (the human summary goes to stderr).
    #[arg(long)]
    json: bool,
    /// No progress lines.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(0.0..=3600.0).contains(&secs) {
        return Err("seconds must be 0..=3600".to_owned());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    let ratio: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !(0.0..=0.5).contains(&ratio) {
        return Err("a loss ratio is 0..=0.5 (0.001 = 0.1 %)".to_owned());
    }
    Ok(ratio)
}

fn parse_suite(text: &str) -> Result<Suite, String> {
    Suite::from_sdes_name(text).ok_or_else(|| {
        let names: Vec<&str> = Suite::ALL.iter().map(|s| s.sdes_name()).collect();
        format!("unknown suite; one of {}", names.join(", "))
    })
}

fn config(args: &Args) -> Config {
    let control = match (&args.api, args.ng) {
        (Some(url), _) => Control::Api {
            url: url.clone(),
            token: args.token.clone().map(Token::new),
        },
        (None, Some(server)) => Control::Ng { server },
        // clap's "control" group requires one of them.
        (None, None) => unreachable!("clap requires --api or --ng"),
    };
    let mut config = Config::new(control);
    config.calls = args.calls;
    config.pps = args.pps;
    config.duration = args.duration;
    config.warmup = args.warmup;
    config.drain = args.drain;
    config.payload_len = args.payload;
    config.suite = (!args.plain).then_some(args.suite);
    config.bind_a = args.bind_a;
    config.bind_b = args.bind_b;
    config.tick = Duration::from_micros(args.tick_us);
    config.tx_cpu = args.cpu;
    config.rx_cpu = args.rx_cpu;
    config.progress = !args.quiet;
    config.alive_window = args.alive_window_secs;
    config
}

fn run(args: &Args) -> Result<(), loadgen::LoadgenError> {
    let config = config(args);
    let (summary, json) = if args.find_max {
        let params = FindMaxParams {
            step: args.step_secs,
            max_steps: args.max_steps,
            max_loss: args.max_loss,
        };
        let report = loadgen::find_max(&config, &params)?;
        (report.summary(), serde_json::to_string_pretty(&report))
    } else if let Some(pps_per_stream) = args.overload {
        let params = OverloadParams {
            pps_per_stream,
            overload: args.overload_secs,
            recover: args.recover_secs,
        };
        let report = loadgen::overload(&config, &params)?;
        (report.summary(), serde_json::to_string_pretty(&report))
    } else {
        let report = loadgen::run(&config)?;
        (report.summary(), serde_json::to_string_pretty(&report))
    };
    if args.json {
        eprint!("{summary}");
        let json = json.map_err(|e| loadgen::LoadgenError::config(e.to_string()))?;
        println!("{json}");
    } else {
        print!("{summary}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay-loadgen: error: {e}");
            ExitCode::FAILURE
        }
    }
}
