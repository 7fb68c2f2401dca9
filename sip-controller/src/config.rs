//! sip-controller's configuration: a TOML file (documented example: `deploy/sip-controller.toml`)
//! plus CLI flags, with loopback defaults that need no file (the profile `cargo xtask up` runs).
//!
//! Validation happens here, once, at startup: every error names the key it is about
//! (`trunks[1].uri: ...`), so an operator never has to guess which line is wrong.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use serde::Deserialize;
use srtp::Suite;

/// A configuration error, naming the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TOML did not parse or a field had the wrong type.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// toml's message (names the key and line).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key, e.g. `trunks[0].uri`.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Media protection a leg requires.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SrtpMode {
    /// SRTP or the call fails (488).
    Mandatory,
    /// SRTP when the peer offers or accepts it, plain otherwise.
    #[default]
    Optional,
    /// Plain RTP only.
    Off,
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// SIP listeners and identity.
    pub sip: SipConfig,
    /// TLS certificates and verification.
    pub tls: TlsConfig,
    /// The relay this controller programs.
    pub relay: RelayConfig,
    /// The controller's HTTP API (calls, verdicts, metrics).
    pub api: ApiConfig,
    /// Call detail records.
    pub cdr: CdrConfig,
    /// Registrar and digest authentication.
    pub registrar: RegistrarConfig,
    /// Media policy of registered endpoints.
    pub endpoints: EndpointConfig,
    /// Trunks (carriers, PBXs) calls come from and go to.
    pub trunks: Vec<TrunkConfig>,
    /// Routing rules, first match wins.
    pub routes: Vec<RouteConfig>,
    /// rtpengine-compatible NG control protocol (empty `udp` and `tcp` turn it off).
    pub ng: crate::ng::NgConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            sip: SipConfig::default(),
            tls: TlsConfig::default(),
            relay: RelayConfig::default(),
            api: ApiConfig::default(),
            cdr: CdrConfig::default(),
            registrar: RegistrarConfig::default(),
            endpoints: EndpointConfig::default(),
            trunks: Vec::new(),
            routes: vec![RouteConfig {
                name: "registered-users".to_owned(),
                from: None,
                user_prefix: None,
                domain: None,
                to: "registrar".to_owned(),
                strip_prefix: 0,
            }],
            ng: crate::ng::NgConfig::default(),
        }
    }
}

/// `[sip]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// UDP listen addresses.
    pub udp: Vec<SocketAddr>,
    /// TCP listen addresses.
    pub tcp: Vec<SocketAddr>,
    /// TLS listen addresses.
    pub tls: Vec<SocketAddr>,
    /// Host (name or address) put in Via, Contact and Record-Route; default: the address of the
    /// first listener.
    pub advertised_host: Option<String>,
    /// Most concurrent calls; more get 503.
    pub max_calls: usize,
    /// Most SIP transactions alive at once (beyond it requests get 503). Over UDP every call
    /// keeps about three transactions for 32 s after it ends (Timers J, L, M), so a sustained
    /// rate of R calls/s needs about 100 * R.
    pub max_transactions: usize,
    /// Seconds an INVITE may ring before the controller gives up (408 to the caller, CANCEL to
    /// the callee).
    pub ring_timeout_secs: u64,
    /// `User-Agent`/`Server` header value.
    pub user_agent: String,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            udp: vec![SocketAddr::from(([127, 0, 0, 1], 5060))],
            tcp: vec![SocketAddr::from(([127, 0, 0, 1], 5060))],
            tls: vec![SocketAddr::from(([127, 0, 0, 1], 5061))],
            advertised_host: None,
            max_calls: 50_000,
            max_transactions: 500_000,
            ring_timeout_secs: 180,
            user_agent: format!("sip-controller/{}", crate::VERSION),
        }
    }
}

/// `[tls]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Server certificate chain (PEM); with `key`. Absent: a self-signed certificate is
    /// generated on first start and kept in `state_dir`.
    pub cert: Option<PathBuf>,
    /// Server private key (PEM).
    pub key: Option<PathBuf>,
    /// Where the generated certificate lives.
    pub state_dir: PathBuf,
    /// CA bundle (PEM) that client certificates must chain to.
    pub client_ca: Option<PathBuf>,
    /// Refuse TLS clients without a valid certificate (needs `client_ca`).
    pub require_client_cert: bool,
    /// CA bundles (PEM) trusted for outbound TLS (trunks).
    pub ca_files: Vec<PathBuf>,
    /// Verify outbound servers' certificates. `false` is for lab trunks only and is logged.
    pub verify_server: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            state_dir: PathBuf::from("sip-controller-state"),
            client_ca: None,
            require_client_cert: false,
            ca_files: Vec::new(),
            verify_server: true,
        }
    }
}

/// `[relay]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Where the relay runs: a separate relayd over HTTP, or inside this process.
    pub mode: RelayMode,
    /// relayd's control API (`http` mode).
    pub url: String,
    /// File with relayd's bearer token (the env `RELAYD_TOKEN` wins).
    pub token_file: PathBuf,
    /// Seconds of media silence after which the call is torn down (relayd's media timeout).
    pub media_timeout_secs: u64,
    /// How often relayd's health (boot id) and media timeouts are checked, in milliseconds.
    pub poll_interval_ms: u64,
    /// `embedded` mode: relayd's configuration file (relayd's format, deploy/relayd.toml);
    /// empty: relayd's loopback defaults.
    pub relayd_config: PathBuf,
    /// `embedded` mode: also serve relayd's HTTP API (sessions, `/metrics`) on the relayd
    /// configuration's `http.listen`, with its token.
    pub relayd_api: bool,
}

/// `relay.mode`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RelayMode {
    /// A separate relayd, programmed over its HTTP API (`relay.url`).
    #[default]
    Http,
    /// relayd's control plane and datapath inside this process (rtpengine's single-process
    /// shape; the fastest NG front). The relay gets the privileges this process has.
    Embedded,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            mode: RelayMode::Http,
            url: "http://127.0.0.1:8740".to_owned(),
            token_file: PathBuf::from("relayd.token"),
            media_timeout_secs: 60,
            poll_interval_ms: 1000,
            relayd_config: PathBuf::new(),
            relayd_api: true,
        }
    }
}

/// `[api]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Listen address of the controller's HTTP API.
    pub listen: SocketAddr,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
        }
    }
}

/// `[cdr]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdrConfig {
    /// File that gets one JSON line per finished call (absent: CDRs only in the log).
    pub path: Option<PathBuf>,
}

/// `[registrar]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrarConfig {
    /// Digest realm.
    pub realm: String,
    /// Sources that may REGISTER (and call) without credentials.
    pub allow_unauthenticated_from: Vec<IpNet>,
    /// Smallest accepted non-zero expiry (423 below).
    pub min_expires: u32,
    /// Largest expiry granted.
    pub max_expires: u32,
    /// Expiry when the request gives none.
    pub default_expires: u32,
    /// Contacts per address of record.
    pub max_contacts_per_aor: usize,
    /// Bindings in total.
    pub max_bindings: usize,
    /// Seconds a digest nonce stays valid.
    pub nonce_lifetime_secs: u64,
    /// Users that may register.
    pub users: Vec<UserConfig>,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        Self {
            realm: "sip-controller".to_owned(),
            allow_unauthenticated_from: vec![
                IpNet::from(IpAddr::from([127, 0, 0, 1])).supernet_or_self(8)
            ],
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            max_contacts_per_aor: 10,
            max_bindings: 100_000,
            nonce_lifetime_secs: 300,
            users: Vec::new(),
        }
    }
}

trait SupernetOrSelf {
    fn supernet_or_self(self, prefix: u8) -> IpNet;
}

impl SupernetOrSelf for IpNet {
    fn supernet_or_self(self, prefix: u8) -> IpNet {
        IpNet::new(self.addr(), prefix).map_or(self, |net| net.trunc())
    }
}

/// `[[registrar.users]]`. Debug never shows the password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Digest username (also the user part of the AOR).
    pub username: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// `[endpoints]`: registered phones and PBXs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointConfig {
    /// Media protection towards registered endpoints.
    pub srtp: SrtpMode,
    /// Allowed suites, in preference order (names as in SDES).
    pub suites: Vec<String>,
    /// relayd interface for their media.
    pub relay_interface: String,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            srtp: SrtpMode::Optional,
            suites: default_suites(),
            relay_interface: "default".to_owned(),
        }
    }
}

fn default_suites() -> Vec<String> {
    [
        Suite::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32,
        Suite::AeadAes128Gcm,
        Suite::AesCm256HmacSha1_80,
        Suite::AeadAes256Gcm,
        Suite::AesCm256HmacSha1_32,
    ]
    .iter()
    .map(|s| s.sdes_name().to_owned())
    .collect()
}

fn default_interface() -> String {
    "default".to_owned()
}

/// `[[trunks]]`: a carrier or PBX.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// Name used by routes and in verdicts.
    pub name: String,
    /// Where calls to this trunk go: `sip:`/`sips:` URI; `;transport=` and `sips:` honoured.
    pub uri: String,
    /// Sources whose requests belong to this trunk.
    #[serde(default)]
    pub allow_from: Vec<IpNet>,
    /// Media protection on this trunk's leg.
    #[serde(default)]
    pub srtp: SrtpMode,
    /// Allowed suites in preference order.
    #[serde(default = "default_suites")]
    pub suites: Vec<String>,
    /// relayd interface for this trunk's media.
    #[serde(default = "default_interface")]
    pub relay_interface: String,
}

/// `[[routes]]`: first match wins.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name shown in logs and CDRs.
    pub name: String,
    /// Where the call comes from: a trunk name, or `endpoints` (registered/allowed users).
    /// Absent: anywhere.
    #[serde(default)]
    pub from: Option<String>,
    /// Request-URI user must start with this.
    #[serde(default)]
    pub user_prefix: Option<String>,
    /// Request-URI host must equal this (case-insensitive).
    #[serde(default)]
    pub domain: Option<String>,
    /// Target: a trunk name, or `registrar` (the Request-URI's registered contacts).
    pub to: String,
    /// Digits removed from the front of the user part before sending on.
    #[serde(default)]
    pub strip_prefix: usize,
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::parse(&text).map_err(|message| ConfigError::Syntax {
            path: path.to_owned(),
            message,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML. The error names the line and what is wrong but never quotes the line:
    /// toml's own rendering echoes it, and it may be `password = ...`.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
            match line {
                Some(line) => format!("line {line}: {}", e.message()),
                None => e.message().to_owned(),
            }
        })
    }

    /// Checks cross-field rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.sip.udp.is_empty() && self.sip.tcp.is_empty() && self.sip.tls.is_empty() {
            return Err(invalid("sip", "no listener: set udp, tcp or tls"));
        }
        if self.sip.max_calls == 0 {
            return Err(invalid("sip.max_calls", "must be at least 1"));
        }
        if self.sip.max_transactions < 100 {
            return Err(invalid("sip.max_transactions", "must be at least 100"));
        }
        if self.sip.ring_timeout_secs == 0 {
            return Err(invalid("sip.ring_timeout_secs", "must be at least 1"));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(invalid("tls.cert", "tls.cert and tls.key go together"));
        }
        if self.tls.require_client_cert && self.tls.client_ca.is_none() {
            return Err(invalid(
                "tls.require_client_cert",
                "needs tls.client_ca to verify client certificates against",
            ));
        }
        if self.relay.mode == RelayMode::Http && !self.relay.url.starts_with("http://") {
            return Err(invalid("relay.url", "expected http://host:port"));
        }
        if self.relay.poll_interval_ms < 100 {
            return Err(invalid("relay.poll_interval_ms", "must be at least 100"));
        }
        let reg = &self.registrar;
        if reg.min_expires == 0 || reg.min_expires > reg.max_expires {
            return Err(invalid(
                "registrar.min_expires",
                "must be between 1 and registrar.max_expires",
            ));
        }
        if reg.default_expires < reg.min_expires || reg.default_expires > reg.max_expires {
            return Err(invalid(
                "registrar.default_expires",
                "must be between registrar.min_expires and registrar.max_expires",
            ));
        }
        if reg.realm.is_empty() || reg.realm.contains('"') {
            return Err(invalid(
                "registrar.realm",
                "must be non-empty without quotes",
            ));
        }
        let mut users = HashSet::new();
        for (i, user) in reg.users.iter().enumerate() {
            if user.username.is_empty() || !users.insert(user.username.as_str()) {
                return Err(invalid(
                    format!("registrar.users[{i}].username"),
                    "must be non-empty and unique",
                ));
            }
        }
        check_suites("endpoints.suites", &self.endpoints.suites)?;
        let mut names = HashSet::new();
        for (i, trunk) in self.trunks.iter().enumerate() {
            if trunk.name.is_empty() || trunk.name == "endpoints" || trunk.name == "registrar" {
                return Err(invalid(
                    format!("trunks[{i}].name"),
                    "must be non-empty and not `endpoints` or `registrar`",
                ));
            }
            if !names.insert(trunk.name.as_str()) {
                return Err(invalid(format!("trunks[{i}].name"), "duplicate trunk name"));
            }
            crate::sip::Uri::parse(&trunk.uri)
                .map_err(|e| invalid(format!("trunks[{i}].uri"), e.to_string()))
                .and_then(|uri| {
                    if uri.as_sip().is_some() {
                        Ok(())
                    } else {
                        Err(invalid(
                            format!("trunks[{i}].uri"),
                            "must be a sip: or sips: URI",
                        ))
                    }
                })?;
            check_suites(&format!("trunks[{i}].suites"), &trunk.suites)?;
        }
        for (i, route) in self.routes.iter().enumerate() {
            if let Some(from) = &route.from {
                if from != "endpoints" && !names.contains(from.as_str()) {
                    return Err(invalid(
                        format!("routes[{i}].from"),
                        format!("no trunk named {from:?} (or use `endpoints`)"),
                    ));
                }
            }
            if route.to != "registrar" && !names.contains(route.to.as_str()) {
                return Err(invalid(
                    format!("routes[{i}].to"),
                    format!("no trunk named {:?} (or use `registrar`)", route.to),
                ));
            }
        }
        Ok(())
    }

    /// The trunk called `name`.
    pub fn trunk(&self, name: &str) -> Option<&TrunkConfig> {
        self.trunks.iter().find(|t| t.name == name)
    }

    /// The first trunk whose `allow_from` holds `source`.
    pub fn trunk_for_source(&self, source: IpAddr) -> Option<&TrunkConfig> {
        self.trunks
            .iter()
            .find(|t| t.allow_from.iter().any(|net| net.contains(&source)))
    }
}

/// Parses suite names (validated in [`Config::validate`]).
pub fn parse_suites(names: &[String]) -> Vec<Suite> {
    names
        .iter()
        .filter_map(|name| Suite::from_sdes_name(name))
        .collect()
}

fn check_suites(key: &str, names: &[String]) -> Result<(), ConfigError> {
    if names.is_empty() {
        return Err(invalid(key, "at least one suite"));
    }
    for (i, name) in names.iter().enumerate() {
        if Suite::from_sdes_name(name).is_none() {
            return Err(invalid(
                format!("{key}[{i}]"),
                format!("unknown suite {name:?}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let config = Config::parse(text).map_err(|message| ConfigError::Syntax {
            path: PathBuf::from("test.toml"),
            message,
        })?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn defaults_are_a_loopback_profile() {
        let config = parse("").expect("defaults validate");
        assert_eq!(
            config.sip.tls,
            vec![SocketAddr::from(([127, 0, 0, 1], 5061))]
        );
        assert!(
            config.registrar.allow_unauthenticated_from[0].contains(&IpAddr::from([127, 9, 8, 7]))
        );
        assert!(
            !config.registrar.allow_unauthenticated_from[0].contains(&IpAddr::from([10, 0, 0, 1]))
        );
        assert_eq!(config.routes[0].to, "registrar");
    }

    #[test]
    fn trunks_and_routes_parse() {
        let config = parse(
            r#"
            [[trunks]]
            name = "carrier"
            uri = "sips:sbc.carrier.example:5061"
            allow_from = ["198.18.0.0/15"]
            srtp = "mandatory"

            [[trunks]]
            name = "pbx"
            uri = "sip:198.19.0.10:5060;transport=udp"
            srtp = "off"

            [[routes]]
            name = "in"
            from = "carrier"
            to = "pbx"

            [[routes]]
            name = "out"
            from = "pbx"
            user_prefix = "00"
            strip_prefix = 2
            to = "carrier"
            "#,
        )
        .expect("valid");
        assert_eq!(config.trunks[0].srtp, SrtpMode::Mandatory);
        assert_eq!(
            config
                .trunk_for_source(IpAddr::from([198, 19, 1, 1]))
                .map(|t| t.name.as_str()),
            Some("carrier")
        );
        assert!(config
            .trunk_for_source(IpAddr::from([10, 0, 0, 1]))
            .is_none());
        assert_eq!(config.routes[1].strip_prefix, 2);
    }

    #[test]
    fn the_documented_example_is_valid() {
        let config = parse(include_str!("../../deploy/sip-controller.toml"))
            .expect("deploy/sip-controller.toml parses and validates");
        assert_eq!(config.relay.mode, RelayMode::Http);
        assert!(config.relay.relayd_api);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "[[trunks]]\nname = \"a\"\nuri = \"http://x\"\n",
                "trunks[0].uri",
            ),
            (
                "[[trunks]]\nname = \"a\"\nuri = \"sip:x\"\nsuites = [\"ROT13\"]\n",
                "trunks[0].suites[0]",
            ),
            (
                "[[routes]]\nname = \"r\"\nto = \"nowhere\"\n",
                "routes[0].to",
            ),
            ("[registrar]\nmin_expires = 0\n", "registrar.min_expires"),
            ("[tls]\ncert = \"a.pem\"\n", "tls.cert"),
            (
                "[tls]\nrequire_client_cert = true\n",
                "tls.require_client_cert",
            ),
            ("[relay]\nurl = \"https://x\"\n", "relay.url"),
        ];
        for (text, key) in cases {
            match parse(text) {
                Err(ConfigError::Invalid { key: got, .. }) => assert_eq!(got, key, "{text}"),
                other => panic!("{text}: expected an error naming {key}, got {other:?}"),
            }
        }
        match parse("[sip]\nudpp = []\n") {
            Err(ConfigError::Syntax { message, .. }) => assert!(message.contains("udpp")),
            other => panic!("unknown key accepted: {other:?}"),
        }
        match parse("[relay]\nmode = \"remote\"\n") {
            Err(ConfigError::Syntax { message, .. }) => {
                assert!(message.contains("`http` or `embedded`"), "{message}");
            }
            other => panic!("unknown relay mode accepted: {other:?}"),
        }
    }

    #[test]
    fn syntax_errors_do_not_quote_the_line() {
        match parse("[[registrar.users]]\nusername = \"alice\"\npassword = s3cret\n") {
            Err(ConfigError::Syntax { message, .. }) => {
                assert!(message.starts_with("line 3:"), "{message}");
                assert!(!message.contains("s3cret"), "{message}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn passwords_stay_out_of_debug() {
        let config =
            parse("[[registrar.users]]\nusername = \"alice\"\npassword = \"s3cret\"\n").unwrap();
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
