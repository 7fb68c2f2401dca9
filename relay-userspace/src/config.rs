//! relayd's configuration: a TOML file (documented example: `deploy/relayd.toml`) whose every
//! key has a loopback default, so relayd runs with no file at all. Unknown keys are errors, and
//! every error names the key.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::xdp::AttachMode;

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The HTTP control API.
    pub http: HttpConfig,
    /// Media handling defaults.
    pub media: MediaConfig,
    /// Media interfaces; the one named `default` is used when a leg names none.
    #[serde(rename = "interface")]
    pub interfaces: Vec<InterfaceConfig>,
    /// The datapath.
    pub datapath: DatapathConfig,
    /// Persistent state.
    pub state: StateConfig,
}

/// `[state]`
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Directory where sessions are persisted so a restarted relayd restores them (and, with
    /// the xdp datapath, re-adopts their kernel flows). Empty: nothing is persisted.
    pub dir: PathBuf,
}

/// `[http]`
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address of the control API.
    pub listen: SocketAddr,
    /// File holding the bearer token; created with a fresh random token when missing. The
    /// environment variable `RELAYD_TOKEN` overrides it.
    pub token_file: PathBuf,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
}

/// `[media]`
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Seconds of silence after which a leg is reported as timed out (per session overridable).
    pub timeout_secs: u64,
    /// Seconds after the first packet during which a learning leg may move its latch.
    pub latch_window_secs: u64,
    /// Seconds a released port stays out of use.
    pub port_quarantine_secs: u64,
    /// Most sessions at once.
    pub max_sessions: usize,
}

/// `[[interface]]`
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    /// Name legs refer to.
    pub name: String,
    /// Local address media sockets bind to.
    pub address: IpAddr,
    /// First port of the range (rounded up to even).
    pub port_min: u16,
    /// Last port of the range.
    pub port_max: u16,
}

/// `[datapath]`
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DatapathConfig {
    /// `socket` (portable, the default) or `xdp`.
    pub kind: DatapathKind,
    /// Worker threads of the socket datapath (0: one per CPU).
    pub workers: usize,
    /// Pin worker `i` to CPU `cpus[i % len]` when not empty.
    pub cpus: Vec<usize>,
    /// Packets read per socket per turn (the fairness quantum) and per batch.
    pub batch: usize,
    /// Kernel receive buffer per socket, in bytes (0: the system default).
    pub socket_rcvbuf: usize,
    /// Network interfaces the XDP program is attached to (with `kind = "xdp"`, or alone to
    /// count traffic).
    pub xdp_interfaces: Vec<String>,
    /// XDP attach mode.
    pub xdp_mode: XdpModeConfig,
    /// AF_XDP workers running SRTP for flows XDP pins (with `kind = "xdp"`); 0 leaves SRTP
    /// flows on the socket datapath. Every XDP interface needs at least this many queues.
    pub xdp_workers: usize,
    /// Pin AF_XDP worker `i` to CPU `xdp_cpus[i % len]` when not empty.
    pub xdp_cpus: Vec<usize>,
    /// Frames per AF_XDP batch.
    pub xdp_batch: usize,
    /// Descriptors per AF_XDP ring (a power of two).
    pub xdp_ring_size: u32,
    /// Preferred busy polling on the AF_XDP sockets: workers run their queues' receive
    /// processing themselves (set the interfaces' `napi_defer_hard_irqs` and
    /// `gro_flush_timeout` too).
    pub xdp_busy_poll: bool,
    /// AF_XDP bind mode: `auto` (zero-copy where the driver has it), `copy` or `zerocopy`.
    pub xdp_bind: XdpBindConfig,
    /// bpffs directory where the xdp datapath pins its maps and links (empty: no pinning).
    pub xdp_pin_dir: PathBuf,
    /// Leave the program attached and its maps pinned when relayd exits, so flows pinned in
    /// XDP keep forwarding until the next relayd adopts them. `false` removes everything.
    pub xdp_keep_on_exit: bool,
}

/// AF_XDP bind mode in the file.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum XdpBindConfig {
    /// Zero-copy where the driver supports it, else copy.
    #[default]
    Auto,
    /// Copy mode (veth and every driver with XDP).
    Copy,
    /// Zero-copy only.
    Zerocopy,
}

impl From<XdpBindConfig> for crate::afxdp::BindMode {
    fn from(mode: XdpBindConfig) -> Self {
        match mode {
            XdpBindConfig::Auto => Self::Auto,
            XdpBindConfig::Copy => Self::Copy,
            XdpBindConfig::Zerocopy => Self::ZeroCopy,
        }
    }
}

/// Which datapath moves packets.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DatapathKind {
    /// Userspace sockets with recvmmsg/sendmmsg.
    #[default]
    Socket,
    /// XDP and AF_XDP.
    Xdp,
}

/// XDP attach mode in the file.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum XdpModeConfig {
    /// Native (driver) mode.
    #[default]
    Native,
    /// Generic (skb) mode.
    Generic,
}

impl From<XdpModeConfig> for AttachMode {
    fn from(mode: XdpModeConfig) -> Self {
        match mode {
            XdpModeConfig::Native => Self::Native,
            XdpModeConfig::Generic => Self::Generic,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpConfig::default(),
            media: MediaConfig::default(),
            interfaces: vec![InterfaceConfig {
                name: "default".to_owned(),
                address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port_min: 30_000,
                port_max: 39_999,
            }],
            datapath: DatapathConfig::default(),
            state: StateConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8740)),
            token_file: PathBuf::from("relayd.token"),
            max_body_bytes: 64 * 1024,
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            timeout_secs: 60,
            latch_window_secs: 10,
            port_quarantine_secs: 30,
            max_sessions: 50_000,
        }
    }
}

impl Default for DatapathConfig {
    fn default() -> Self {
        Self {
            kind: DatapathKind::Socket,
            workers: 0,
            cpus: Vec::new(),
            batch: 64,
            socket_rcvbuf: 0,
            xdp_interfaces: Vec::new(),
            xdp_mode: XdpModeConfig::Native,
            xdp_workers: 1,
            xdp_cpus: Vec::new(),
            xdp_batch: 64,
            xdp_ring_size: 2048,
            xdp_busy_poll: false,
            xdp_bind: XdpBindConfig::Auto,
            xdp_pin_dir: PathBuf::from("/sys/fs/bpf/relayd"),
            xdp_keep_on_exit: true,
        }
    }
}

/// A configuration that cannot be used, naming the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown or mistyped key (the message names it).
    #[error("{path}: {message}")]
    Parse {
        /// The path.
        path: PathBuf,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// A value is out of range.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key, e.g. `interface[1].port_min`.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(key: impl fmt::Display, reason: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates TOML text (`path` only names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and cross-references.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.http.max_body_bytes < 1024 || self.http.max_body_bytes > 16 * 1024 * 1024 {
            return Err(invalid("http.max_body_bytes", "must be 1024..=16777216"));
        }
        if !(1..=86_400).contains(&self.media.timeout_secs) {
            return Err(invalid("media.timeout_secs", "must be 1..=86400"));
        }
        if self.media.latch_window_secs > 3600 {
            return Err(invalid("media.latch_window_secs", "must be at most 3600"));
        }
        if self.media.port_quarantine_secs > 3600 {
            return Err(invalid(
                "media.port_quarantine_secs",
                "must be at most 3600",
            ));
        }
        if self.media.max_sessions == 0 {
            return Err(invalid("media.max_sessions", "must be at least 1"));
        }
        if self.interfaces.is_empty() {
            return Err(invalid("interface", "at least one [[interface]] is needed"));
        }
        for (i, interface) in self.interfaces.iter().enumerate() {
            let key = |field: &str| format!("interface[{i}].{field}");
            crate::model::validate_id("interface", &interface.name)
                .map_err(|e| invalid(key("name"), e))?;
            if self.interfaces[..i]
                .iter()
                .any(|o| o.name == interface.name)
            {
                return Err(invalid(
                    key("name"),
                    format!("{:?} is used twice", interface.name),
                ));
            }
            if interface.address.is_unspecified() || interface.address.is_multicast() {
                return Err(invalid(
                    key("address"),
                    "must be a unicast address of this host",
                ));
            }
            if interface.port_min < 1024 {
                return Err(invalid(key("port_min"), "must be at least 1024"));
            }
            if u32::from(interface.port_max) < u32::from(interface.port_min) + 3 {
                return Err(invalid(
                    key("port_max"),
                    "the range must hold at least two port pairs",
                ));
            }
        }
        if !(1..=1024).contains(&self.datapath.batch) {
            return Err(invalid("datapath.batch", "must be 1..=1024"));
        }
        if self.datapath.workers > 256 {
            return Err(invalid("datapath.workers", "must be at most 256"));
        }
        if self.datapath.xdp_workers > 64 {
            return Err(invalid("datapath.xdp_workers", "must be at most 64"));
        }
        if !(1..=1024).contains(&self.datapath.xdp_batch) {
            return Err(invalid("datapath.xdp_batch", "must be 1..=1024"));
        }
        if !self.datapath.xdp_ring_size.is_power_of_two()
            || !(64..=16_384).contains(&self.datapath.xdp_ring_size)
        {
            return Err(invalid(
                "datapath.xdp_ring_size",
                "must be a power of two in 64..=16384",
            ));
        }
        if self.datapath.kind == DatapathKind::Xdp && self.datapath.xdp_interfaces.is_empty() {
            return Err(invalid(
                "datapath.xdp_interfaces",
                "kind = \"xdp\" needs at least one interface",
            ));
        }
        Ok(())
    }

    /// The interface named `name`.
    pub fn interface(&self, name: &str) -> Option<&InterfaceConfig> {
        self.interfaces.iter().find(|i| i.name == name)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{Config, ConfigError};

    #[test]
    fn no_file_means_loopback_defaults() {
        let config = Config::parse(Path::new("x.toml"), "").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.http.listen.to_string(), "127.0.0.1:8740");
        assert_eq!(config.interface("default").unwrap().port_min, 30_000);
    }

    #[test]
    fn the_documented_example_parses() {
        let text = include_str!("../../deploy/relayd.toml");
        let config = Config::parse(Path::new("deploy/relayd.toml"), text).unwrap();
        assert!(config.interface("default").is_some());
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::parse(Path::new("r.toml"), "[media]\ntimeout_secs = 0\n").unwrap_err();
        assert_eq!(err.to_string(), "media.timeout_secs: must be 1..=86400");
        let err = Config::parse(Path::new("r.toml"), "[media]\ntimeuot_secs = 5\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }));
        assert!(err.to_string().contains("timeuot_secs"), "{err}");
        let err = Config::parse(
            Path::new("r.toml"),
            "[[interface]]\nname = \"a\"\naddress = \"127.0.0.1\"\nport_min = 5000\nport_max = 5001\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "interface[0].port_max: the range must hold at least two port pairs"
        );
        let err = Config::parse(Path::new("r.toml"), "[http]\nlisten = \"nope\"\n").unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
    }
}
