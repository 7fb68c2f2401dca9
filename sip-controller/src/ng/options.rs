//! NG request options: the request dictionary (and Kamailio's single-string `rtpp_flags`
//! form) turned into a typed [`Request`], with every option either honoured, accepted because
//! it cannot change what we do, reported back as a `warning`, or refused with a precise
//! `error-reason`. Nothing is silently ignored except the purely informational keys listed
//! below.
//!
//! Key and flag names are matched as rtpengine matches them, and a little more leniently:
//! ASCII case-insensitively, with spaces and underscores equal to hyphens
//! (`"transport protocol"`, `"transport-protocol"` and `"Transport_Protocol"` are one key).
//! SDES session parameters keep their underscores (`SDES-unencrypted_srtp`).
//!
//! | Option                                   | Handling                                          |
//! |------------------------------------------|---------------------------------------------------|
//! | `call-id`, `from-tag`, `to-tag`, `via-branch`, `label`/`from-label`/`set-label`, `sdp` | used |
//! | `transport-protocol` RTP/AVP, RTP/AVPF, RTP/SAVP, RTP/SAVPF | profile towards the receiver; SRTP↔RTP transcrypting |
//! | `transport-protocol` accept (answer)     | accepted (AVP/AVPF changes are tolerated)         |
//! | `transport-protocol` UDP/TLS/...         | error: DTLS-SRTP is not supported                 |
//! | flags `trust-address` / `SIP-source-address` | peer address from SDP / from `received-from`  |
//! | flags `symmetric`                        | accepted (the default)                            |
//! | flags `asymmetric`                       | no latching: the SDP address is used as is        |
//! | flags `strict-source` / `media-handover` | drop / accept packets from other sources          |
//! | flags `port-latching`, `no-port-latching`| accepted (relay ports never change in a call)     |
//! | flags `reset`, `unidirectional`, `original-sendrecv`, `reject-ICE`, `static-codecs`, `reuse-codecs`/`no-codec-renegotiation`, `symmetric-codecs`, `asymmetric-codecs`, `allow-asymmetric-codecs`, `debug`, `provisional`, `new-branch`, `early-media` | accepted: no effect on a relay that neither transcodes nor runs ICE |
//! | flags `no-rtcp-attribute`, `full-rtcp-attribute` | honoured in the SDP we return             |
//! | flags `pad-crypto`                       | = `SDES-pad`                                      |
//! | flags `fatal`, `fast`, `to-tag` (delete) | honoured                                          |
//! | flags `trickle-ICE`, `pierce-NAT`, `NAT-wait`, `all` | warning: not supported, ignored       |
//! | `replace` origin, origin-full, username, session-connection, session-name, SDP-version, zero-address, force-increment-sdp-ver | honoured (session-connection is always on) |
//! | `rtcp-mux` offer, require, demux, accept, reject | honoured                                  |
//! | `SDES` off/no/disable, no-SUITE, only-SUITE, nonew, pad, lifetime, (un)encrypted_srtp, (un)encrypted_srtcp, (un)authenticated_srtp, order:, offerer_pref:, static, prefer | honoured (`pad`: keys are always padded; `static`, `prefer`: our behaviour already) |
//! | `OSRTP` offer/offer-RFC, accept/accept-RFC | honoured; `offer-legacy`/`accept-legacy`: error |
//! | `ICE` remove                             | honoured (ICE is always removed)                  |
//! | `ICE` force/default/optional/force-relay/… | warning: ICE is removed, the relay runs no ICE  |
//! | `DTLS` off/no/disable                    | accepted (we never offer DTLS)                    |
//! | `DTLS` passive/active, `DTLS-fingerprint`| error: DTLS-SRTP is not supported                 |
//! | `direction`, `from-interface`, `to-interface`, `interface` | named relay interfaces          |
//! | `received-from`, `media-address`, `address-family` | honoured                                |
//! | `delete-delay`, `limit`                  | honoured                                          |
//! | `endpoint-learning` off/immediate/delayed/heuristic | off = no latching; others learn        |
//! | `record-call` on/yes, `codec` (non-empty), `ptime`, `T.38`, `media-echo`, `sdp-attr`, `sdp-media-remove`, DTMF options, `generate-RTCP`, `loop-protect`, `WebRTC`, `SIPREC`, `single-codec`, `always-transcode`, `generate-mid`, `strip-extmap`, `bundle` offer/require, … | error: not supported |
//! | `TOS`, `metadata`, `xmlrpc-callback`, `ICE-lite`, `to-label` | warning: ignored             |
//! | `SIP-message-type`, `SIP-code`, `supports`, `record-call` off/no, `audio-player` off/default, `alias-key` off | accepted (informational) |
//! | anything else                            | warning: unknown option ignored                   |

use std::{fmt, net::IpAddr};

use super::bencode::Value;
use crate::sdp::{AddrType, Suite, TransportProtocol};

/// Most flags or option values in one request.
const MAX_OPTIONS: usize = 256;
/// Deepest bracket nesting in an `rtpp_flags` string.
const MAX_FLAG_DEPTH: usize = 4;
/// Longest `delete-delay` accepted, in seconds (rtpengine keeps calls for 30 s by default).
pub const MAX_DELETE_DELAY_SECS: u64 = 3600;
/// Most call ids a `list` reply carries.
pub const MAX_LIST_LIMIT: usize = 1024;

/// The NG commands this server implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// `ping` → `pong`.
    Ping,
    /// `offer`: SDP from the from-tag side.
    Offer,
    /// `answer`: SDP from the to-tag side.
    Answer,
    /// `delete`: tears the call down (optionally delayed).
    Delete,
    /// `query`: per-leg statistics.
    Query,
    /// `list`: call ids.
    List,
    /// `statistics`: counters.
    Statistics,
}

impl Command {
    /// The command's name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Offer => "offer",
            Self::Answer => "answer",
            Self::Delete => "delete",
            Self::Query => "query",
            Self::List => "list",
            Self::Statistics => "statistics",
        }
    }
}

/// Why a request was refused. The `Display` text is the `error-reason` sent back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionError {
    /// The body is not a dictionary.
    #[error("the message body is not a dictionary")]
    NotADictionary,
    /// No `command` key.
    #[error("No command in message")]
    MissingCommand,
    /// A command rtpengine knows and we do not implement.
    #[error("command '{command}' is not supported")]
    UnsupportedCommand {
        /// The command.
        command: String,
    },
    /// A command nobody knows.
    #[error("Unrecognized command '{command}'")]
    UnknownCommand {
        /// The command.
        command: String,
    },
    /// A key with a value of the wrong type or an unusable value.
    #[error("invalid value for '{option}': {reason}")]
    InvalidValue {
        /// The option.
        option: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An option that would change behaviour in a way we cannot provide.
    #[error("option '{option}' is not supported: {reason}")]
    Unsupported {
        /// The option as received.
        option: String,
        /// Why.
        reason: &'static str,
    },
    /// More than the allowed number of flags or values.
    #[error("too many options (at most {max})")]
    TooManyOptions {
        /// The limit.
        max: usize,
    },
    /// An `rtpp_flags` string that does not parse.
    #[error("invalid rtpp_flags: {reason}")]
    InvalidFlagString {
        /// What is wrong.
        reason: &'static str,
    },
}

/// Where a peer's media address comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AddressSource {
    /// The SDP's `c=` and `m=` (`trust-address`, the default).
    #[default]
    Sdp,
    /// The SIP source address from `received-from` with the SDP's ports
    /// (`SIP-source-address`).
    SipSource,
}

/// `transport-protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportOverride {
    /// This RTP profile towards the receiver of the message.
    Profile(TransportProtocol),
    /// `accept` in an answer: go along with the answerer's profile.
    Accept,
}

/// `replace` flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[allow(clippy::struct_excessive_bools)] // One flag per NG replace item.
pub struct Replace {
    /// `origin`: the `o=` address becomes the relay's.
    pub origin: bool,
    /// `origin-full`: the whole `o=` line is ours and stays the same for the receiver.
    pub origin_full: bool,
    /// `username`: the `o=` username stays the same for the receiver.
    pub username: bool,
    /// `session-name`: the `s=` line stays the same for the receiver.
    pub session_name: bool,
    /// `SDP-version`: the `o=` version is ours, bumped when the SDP changes.
    pub sdp_version: bool,
    /// `force-increment-sdp-ver`: the `o=` version is bumped on every message.
    pub force_increment: bool,
    /// `zero-address`: a `c=0.0.0.0` hold address becomes the relay's.
    pub zero_address: bool,
}

/// `rtcp-mux` items.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[allow(clippy::struct_excessive_bools)] // One flag per NG rtcp-mux item.
pub struct RtcpMuxOptions {
    /// `offer`: offer mux to the receiver even if the sender did not.
    pub offer: bool,
    /// `require`: mux towards the receiver without a fallback RTCP port.
    pub require: bool,
    /// `demux`: accept mux from the sender but do not offer it on.
    pub demux: bool,
    /// `accept`: accept mux and offer it on (the default).
    pub accept: bool,
    /// `reject`: refuse the sender's mux.
    pub reject: bool,
}

/// A suite named in an SDES option.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SuiteName {
    /// A suite we implement.
    Known(Suite),
    /// A name we do not implement (`NULL_HMAC_SHA1_80`, `AES_192_CM_HMAC_SHA1_80`, ...).
    Other(String),
}

impl SuiteName {
    fn parse(name: &str) -> Self {
        let upper = name.trim().to_ascii_uppercase();
        match Suite::from_sdes_name(&upper) {
            Some(suite) => Self::Known(suite),
            None => Self::Other(upper),
        }
    }
}

/// `SDES` items.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // One flag per NG SDES item.
pub struct SdesOptions {
    /// `off`/`no`/`disable`: no SDES towards the receiver.
    pub off: bool,
    /// `no-SUITE`.
    pub exclude: Vec<SuiteName>,
    /// `only-SUITE`.
    pub only: Vec<SuiteName>,
    /// `nonew`: offer only suites the sender offered.
    pub nonew: bool,
    /// `pad`.
    pub pad: bool,
    /// `lifetime`: `2^31` on every key we generate.
    pub lifetime: bool,
    /// `unencrypted_srtp` (`Some(true)`) or `encrypted_srtp` (`Some(false)`).
    pub unencrypted_srtp: Option<bool>,
    /// `unencrypted_srtcp` / `encrypted_srtcp`.
    pub unencrypted_srtcp: Option<bool>,
    /// `unauthenticated_srtp` / `authenticated_srtp`.
    pub unauthenticated_srtp: Option<bool>,
    /// `order:` suite list for our offer.
    pub order: Vec<SuiteName>,
    /// `offerer_pref:` suite list for choosing the sender's line.
    pub offerer_pref: Vec<SuiteName>,
}

/// `endpoint-learning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndpointLearning {
    /// `off`: use the signalled address only.
    Off,
    /// `immediate`, `delayed`, `heuristic`: learn from packets.
    Learn,
}

/// An SDP body from a request. It may carry `a=crypto` keys, so `Debug` shows its length
/// only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SdpBody(pub String);

impl SdpBody {
    /// The SDP text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SdpBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SdpBody(<{} bytes>)", self.0.len())
    }
}

/// Everything a request says, typed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // Independent NG flags.
pub struct Options {
    /// `call-id`.
    pub call_id: Option<String>,
    /// `from-tag`.
    pub from_tag: Option<String>,
    /// `to-tag`.
    pub to_tag: Option<String>,
    /// `via-branch`.
    pub via_branch: Option<String>,
    /// `label` (or `from-label`, `set-label`).
    pub label: Option<String>,
    /// `sdp`.
    pub sdp: Option<SdpBody>,
    /// `transport-protocol`.
    pub transport: Option<TransportOverride>,
    /// `trust-address` / `SIP-source-address`.
    pub address_source: AddressSource,
    /// `asymmetric`.
    pub asymmetric: bool,
    /// `strict-source` (`Some(true)`) or `media-handover` (`Some(false)`).
    pub strict_source: Option<bool>,
    /// `endpoint-learning`.
    pub endpoint_learning: Option<EndpointLearning>,
    /// `replace`.
    pub replace: Replace,
    /// `rtcp-mux`.
    pub rtcp_mux: RtcpMuxOptions,
    /// `SDES`.
    pub sdes: SdesOptions,
    /// `OSRTP` offer: best-effort SRTP (RFC 8643) towards the receiver.
    pub osrtp_offer: bool,
    /// `ICE=remove` was asked.
    pub ice_remove: bool,
    /// The interface facing the sender (`direction[0]`, `from-interface`).
    pub from_interface: Option<String>,
    /// The interface facing the receiver (`direction[1]`, `to-interface`).
    pub to_interface: Option<String>,
    /// `received-from`: the SIP message's source address.
    pub received_from: Option<IpAddr>,
    /// `media-address`: overrides the sender's media address.
    pub media_address: Option<IpAddr>,
    /// `address-family`.
    pub address_family: Option<AddrType>,
    /// `delete-delay` in seconds.
    pub delete_delay: Option<u64>,
    /// `limit` (list).
    pub limit: Option<usize>,
    /// Delete flag `fatal`: an unknown call is an error, not a warning.
    pub fatal: bool,
    /// Delete flag `fast`: no statistics in the reply.
    pub fast: bool,
    /// Delete flag `to-tag`: honour the to-tag.
    pub delete_to_tag: bool,
    /// `no-rtcp-attribute`.
    pub no_rtcp_attribute: bool,
    /// `full-rtcp-attribute`.
    pub full_rtcp_attribute: bool,
}

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The command.
    pub command: Command,
    /// Its options.
    pub options: Options,
    /// Options accepted with a warning (sent back in `warning`).
    pub warnings: Vec<String>,
}

/// An option value, from the bencode tree or the `rtpp_flags` string.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Opt {
    Str(String),
    Int(i64),
    List(Vec<Opt>),
    Dict(Vec<(String, Opt)>),
}

impl Opt {
    fn from_value(value: &Value<'_>) -> Self {
        match value {
            Value::Int(n) => Self::Int(*n),
            Value::Bytes(b) => Self::Str(String::from_utf8_lossy(b).into_owned()),
            Value::List(items) => Self::List(items.iter().map(Self::from_value).collect()),
            Value::Dict(entries) => Self::Dict(
                entries
                    .iter()
                    .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), Self::from_value(v)))
                    .collect(),
            ),
        }
    }

    /// The value as one string (integers in decimal).
    fn text(&self) -> Option<String> {
        match self {
            Self::Str(s) => Some(s.clone()),
            Self::Int(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// The value as a list of strings (a single string is a one-item list).
    fn strings(&self) -> Option<Vec<String>> {
        match self {
            Self::List(items) => items.iter().map(Self::text).collect(),
            other => other.text().map(|s| vec![s]),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Self::Str(s) => s.is_empty(),
            Self::Int(_) => false,
            Self::List(items) => items.is_empty(),
            Self::Dict(entries) => entries.iter().all(|(_, v)| v.is_empty()),
        }
    }
}

/// Lower-case with spaces and underscores as hyphens: how keys and flags are compared.
fn normalize(name: &str) -> String {
    name.trim()
        .chars()
        .map(|c| match c {
            ' ' | '_' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Parses a request dictionary.
pub fn parse_request(body: &Value<'_>) -> Result<Request, OptionError> {
    let Value::Dict(entries) = body else {
        return Err(OptionError::NotADictionary);
    };
    let command = body
        .get("command")
        .and_then(Value::as_str)
        .ok_or(OptionError::MissingCommand)?;
    let command = parse_command(command)?;
    let mut parser = Parser {
        options: Options::default(),
        warnings: Vec::new(),
        count: 0,
    };
    for (key, value) in entries {
        let key = String::from_utf8_lossy(key);
        if normalize(&key) == "command" {
            continue;
        }
        parser.key(&key, &Opt::from_value(value))?;
    }
    Ok(Request {
        command,
        options: parser.options,
        warnings: parser.warnings,
    })
}

fn parse_command(name: &str) -> Result<Command, OptionError> {
    let command = match normalize(name).as_str() {
        "ping" => Command::Ping,
        "offer" => Command::Offer,
        "answer" => Command::Answer,
        "delete" => Command::Delete,
        "query" => Command::Query,
        "list" => Command::List,
        "statistics" => Command::Statistics,
        "start-recording" | "stop-recording" | "pause-recording" | "block-dtmf"
        | "unblock-dtmf" | "block-media" | "unblock-media" | "silence-media"
        | "unsilence-media" | "start-forwarding" | "stop-forwarding" | "play-media"
        | "stop-media" | "play-dtmf" | "publish" | "subscribe-request" | "subscribe-answer"
        | "unsubscribe" | "inject-start" | "inject-stop" | "connect" | "create"
        | "create-answer" | "mesh" | "transform" => {
            return Err(OptionError::UnsupportedCommand {
                command: name.to_owned(),
            })
        }
        _ => {
            return Err(OptionError::UnknownCommand {
                command: name.to_owned(),
            })
        }
    };
    Ok(command)
}

/// Applies one item of a list option (`SDES`, `replace`, ...).
type ApplyItem = fn(&mut Parser, &str) -> Result<(), OptionError>;

struct Parser {
    options: Options,
    warnings: Vec<String>,
    count: usize,
}

fn unsupported(option: &str, reason: &'static str) -> OptionError {
    OptionError::Unsupported {
        option: option.to_owned(),
        reason,
    }
}

fn invalid(option: &str, reason: &'static str) -> OptionError {
    OptionError::InvalidValue {
        option: option.to_owned(),
        reason,
    }
}

const NO_TRANSCODING: &str = "relayd forwards media without transcoding";
const NO_DTLS: &str = "DTLS-SRTP is not supported (SDES only)";
const NO_RECORDING: &str = "call recording is not supported";
const NO_DTMF: &str = "DTMF handling is not supported";

impl Parser {
    fn tick(&mut self) -> Result<(), OptionError> {
        self.count += 1;
        if self.count > MAX_OPTIONS {
            return Err(OptionError::TooManyOptions { max: MAX_OPTIONS });
        }
        Ok(())
    }

    fn warn(&mut self, text: String) {
        if self.warnings.len() < 16 && !self.warnings.contains(&text) {
            self.warnings.push(text);
        }
    }

    fn text(key: &str, value: &Opt) -> Result<String, OptionError> {
        value
            .text()
            .ok_or_else(|| invalid(key, "expected a string"))
    }

    fn strings(key: &str, value: &Opt) -> Result<Vec<String>, OptionError> {
        value
            .strings()
            .ok_or_else(|| invalid(key, "expected a string or a list of strings"))
    }

    /// One dictionary key.
    #[allow(clippy::too_many_lines)] // One arm per NG key, kept together as the table above.
    fn key(&mut self, raw: &str, value: &Opt) -> Result<(), OptionError> {
        self.tick()?;
        let key = normalize(raw);
        let o = &mut self.options;
        match key.as_str() {
            "call-id" => o.call_id = Some(Self::text(raw, value)?),
            "from-tag" => o.from_tag = Some(Self::text(raw, value)?),
            "to-tag" => o.to_tag = Some(Self::text(raw, value)?),
            "via-branch" => o.via_branch = Some(Self::text(raw, value)?),
            "label" | "from-label" | "set-label" => o.label = Some(Self::text(raw, value)?),
            "sdp" => o.sdp = Some(SdpBody(Self::text(raw, value)?)),
            "rtpp-flags" => {
                let text = Self::text(raw, value)?;
                for (flag_key, flag_value) in parse_flag_string(&text)? {
                    match flag_value {
                        Some(v) => self.key(&flag_key, &v)?,
                        None => self.flag(&flag_key)?,
                    }
                }
            }
            "flags" => {
                for flag in Self::strings(raw, value)? {
                    self.flag(&flag)?;
                }
            }
            "replace" => {
                for item in Self::strings(raw, value)? {
                    self.replace(&item)?;
                }
            }
            "rtcp-mux" => {
                for item in Self::strings(raw, value)? {
                    self.rtcp_mux(&item)?;
                }
            }
            "sdes" => {
                for item in Self::strings(raw, value)? {
                    self.sdes(&item)?;
                }
            }
            "osrtp" => {
                for item in Self::strings(raw, value)? {
                    self.osrtp(&item)?;
                }
            }
            "ice" => {
                for item in Self::strings(raw, value)? {
                    self.ice(&item)?;
                }
            }
            "dtls" => {
                let text = Self::text(raw, value)?;
                match normalize(&text).as_str() {
                    "off" | "no" | "disable" => {}
                    _ => return Err(unsupported(&format!("DTLS={text}"), NO_DTLS)),
                }
            }
            "dtls-fingerprint" | "dtls-reverse" => return Err(unsupported(raw, NO_DTLS)),
            "transport-protocol" => {
                let text = Self::text(raw, value)?;
                self.transport(&text)?;
            }
            "direction" => {
                let names = Self::strings(raw, value)?;
                for name in names {
                    if self.options.from_interface.is_none() {
                        self.options.from_interface = Some(name);
                    } else if self.options.to_interface.is_none() {
                        self.options.to_interface = Some(name);
                    } else {
                        return Err(invalid(raw, "at most two interfaces"));
                    }
                }
            }
            "from-interface" => o.from_interface = Some(Self::text(raw, value)?),
            "to-interface" => o.to_interface = Some(Self::text(raw, value)?),
            "interface" => {
                let name = Self::text(raw, value)?;
                o.from_interface = Some(name.clone());
                o.to_interface = Some(name);
            }
            "received-from" => {
                let items = Self::strings(raw, value)?;
                // [family, address] as rtpengine defines it; a bare address is accepted too.
                let address = match items.as_slice() {
                    [family, address] => {
                        let family = family.to_ascii_uppercase();
                        if family != "IP4" && family != "IP6" {
                            return Err(invalid(raw, "the address family must be IP4 or IP6"));
                        }
                        address
                    }
                    [address] => address,
                    _ => return Err(invalid(raw, "expected [family, address]")),
                };
                o.received_from = Some(
                    address
                        .trim()
                        .parse()
                        .map_err(|_| invalid(raw, "not an IP address"))?,
                );
            }
            "media-address" => {
                o.media_address = Some(
                    Self::text(raw, value)?
                        .trim()
                        .parse()
                        .map_err(|_| invalid(raw, "not an IP address"))?,
                );
            }
            "address-family" => {
                o.address_family = Some(
                    match Self::text(raw, value)?.to_ascii_uppercase().as_str() {
                        "IP4" => AddrType::Ip4,
                        "IP6" => AddrType::Ip6,
                        _ => return Err(invalid(raw, "expected IP4 or IP6")),
                    },
                );
            }
            "delete-delay" => {
                let delay: u64 = Self::text(raw, value)?
                    .trim()
                    .parse()
                    .map_err(|_| invalid(raw, "expected a number of seconds"))?;
                if delay > MAX_DELETE_DELAY_SECS {
                    return Err(invalid(raw, "at most 3600 seconds"));
                }
                o.delete_delay = Some(delay);
            }
            "limit" => {
                let limit: usize = Self::text(raw, value)?
                    .trim()
                    .parse()
                    .map_err(|_| invalid(raw, "invalid limit, must be >= 0"))?;
                o.limit = Some(limit.min(MAX_LIST_LIMIT));
            }
            "endpoint-learning" => {
                let text = Self::text(raw, value)?;
                self.endpoint_learning(raw, &text)?;
            }
            "record-call" => match normalize(&Self::text(raw, value)?).as_str() {
                "no" | "off" => {}
                _ => return Err(unsupported(raw, NO_RECORDING)),
            },
            "audio-player" => match normalize(&Self::text(raw, value)?).as_str() {
                "off" | "default" => {}
                _ => return Err(unsupported(raw, "the audio player is not supported")),
            },
            "alias-key" => match normalize(&Self::text(raw, value)?).as_str() {
                "off" => {}
                _ => return Err(unsupported(raw, "from-tag aliases are not supported")),
            },
            "bundle" => {
                for item in Self::strings(raw, value)? {
                    match normalize(&item).as_str() {
                        // Incoming bundled SDP is relayed per m= line; nothing to accept.
                        "accept" | "reject" => {}
                        _ => {
                            return Err(unsupported(
                                &format!("bundle={item}"),
                                "BUNDLE offers are not supported",
                            ))
                        }
                    }
                }
            }
            "codec" => {
                if !value.is_empty() {
                    return Err(unsupported("codec", NO_TRANSCODING));
                }
            }
            "ptime" | "ptime-reverse" | "t.38" | "t.38-version" | "delay-buffer" => {
                return Err(unsupported(raw, NO_TRANSCODING))
            }
            "media-echo" | "drop-traffic" | "generate-rtcp" | "sdp-attr" | "sdp-media-remove"
            | "template" | "extmap" | "output-destination" | "recording-file" | "recording-dir"
            | "recording-pattern" | "file" | "blob" | "db-id" => {
                return Err(unsupported(raw, "this media manipulation is not supported"))
            }
            "dtmf-security"
            | "dtmf-security-trigger"
            | "dtmf-security-trigger-end"
            | "dtmf-delay"
            | "dtmf-log-dest"
            | "digit"
            | "code"
            | "frequency"
            | "frequencies"
            | "volume"
            | "trigger"
            | "trigger-end"
            | "end-trigger"
            | "trigger-end-time"
            | "trigger-end-digits" => return Err(unsupported(raw, NO_DTMF)),
            "inbound-peer" | "outbound-peer" | "peer" => return Err(unsupported(
                raw,
                "route-based interface selection is not supported; use from-interface/to-interface",
            )),
            "tos" | "metadata" | "xmlrpc-callback" | "ice-lite" | "to-label" | "all" => {
                self.warn(format!("option '{raw}' is not supported and was ignored"));
            }
            // Informational: they change nothing a relay does.
            "sip-message-type" | "sip-code" | "supports" | "from-tags" => {}
            _ => self.warn(format!("unknown option '{raw}' ignored")),
        }
        Ok(())
    }

    /// One entry of `flags` (or a bare word of `rtpp_flags`).
    #[allow(clippy::too_many_lines)] // One arm per NG flag, kept together as the table above.
    fn flag(&mut self, raw: &str) -> Result<(), OptionError> {
        self.tick()?;
        let flag = normalize(raw);
        // Prefixed forms: SDES-x, replace-x, rtcp-mux-x, OSRTP-x, ICE-x, codec-x, ...
        let prefixed: [(&str, ApplyItem); 6] = [
            ("sdes-", Self::sdes),
            ("replace-", Self::replace),
            ("rtcp-mux-", Self::rtcp_mux),
            ("osrtp-", Self::osrtp),
            ("ice-", Self::ice),
            ("endpoint-learning-", |p, v| {
                p.endpoint_learning("endpoint-learning", v)
            }),
        ];
        for (prefix, apply) in prefixed {
            if let Some(rest) = flag.strip_prefix(prefix) {
                // Keep the original spelling (suite names, session parameters).
                let original = raw.trim().get(prefix.len()..).unwrap_or(rest);
                return apply(self, original);
            }
        }
        if flag.starts_with("codec-") || flag.starts_with("t38-") || flag.starts_with("t.38-") {
            return Err(unsupported(raw, NO_TRANSCODING));
        }
        if flag.starts_with("sdp-attr-") {
            return Err(unsupported(
                raw,
                "SDP attribute manipulation is not supported",
            ));
        }
        if flag.starts_with("from-tags-") {
            return Ok(());
        }
        if let Some(proto) = TransportProtocol::from_sdp(raw.trim()) {
            self.options.transport = Some(TransportOverride::Profile(proto));
            return Ok(());
        }
        let o = &mut self.options;
        match flag.as_str() {
            "trust-address" => o.address_source = AddressSource::Sdp,
            "sip-source-address" => o.address_source = AddressSource::SipSource,
            "symmetric" => o.asymmetric = false,
            "asymmetric" => o.asymmetric = true,
            "strict-source" => o.strict_source = Some(true),
            "media-handover" => o.strict_source = Some(false),
            "no-rtcp-attribute" => o.no_rtcp_attribute = true,
            "full-rtcp-attribute" => o.full_rtcp_attribute = true,
            "pad-crypto" => o.sdes.pad = true,
            "fatal" => o.fatal = true,
            "fast" => o.fast = true,
            "to-tag" => o.delete_to_tag = true,
            "reject-ice" => o.ice_remove = true,
            // Accepted: no effect on a relay that keeps its ports for the whole call, forwards
            // one-way media, never rewrites direction attributes or codecs, and runs no ICE.
            "port-latching"
            | "no-port-latching"
            | "reset"
            | "unidirectional"
            | "original-sendrecv"
            | "static-codecs"
            | "reuse-codecs"
            | "no-codec-renegotiation"
            | "symmetric-codecs"
            | "asymmetric-codecs"
            | "allow-asymmetric-codecs"
            | "debug"
            | "debugging"
            | "provisional"
            | "new-branch"
            | "early-media"
            | "recrypt"
            | "allow-no-codec-media"
            | "allow-transcoding"
            | "no-jitter-buffer"
            | "directional"
            | "no-tls-id" => {}
            "trickle-ice"
            | "pierce-nat"
            | "nat-wait"
            | "all"
            | "egress"
            | "block-egress"
            | "block-short"
            | "block-short-packets"
            | "exclude-recording"
            | "skip-recording-db"
            | "discard-recording"
            | "mix"
            | "bidirectional"
            | "inactive"
            | "rtcp-mirror" => {
                self.warn(format!(
                    "flag '{}' is not supported and was ignored",
                    raw.trim()
                ));
            }
            "record-call" | "siprec" | "recording-announcement" => {
                return Err(unsupported(raw, NO_RECORDING))
            }
            "loop-protect" => {
                return Err(unsupported(
                    raw,
                    "loop protection attributes are not supported",
                ))
            }
            "always-transcode" | "force-transcoding" | "single-codec" | "generate-mid"
            | "strip-extmap" | "fragment" => return Err(unsupported(raw, NO_TRANSCODING)),
            "inject-dtmf" | "detect-dtmf" | "block-dtmf" => return Err(unsupported(raw, NO_DTMF)),
            "generate-rtcp" => return Err(unsupported(raw, "RTCP generation is not supported")),
            "webrtc" => return Err(unsupported(raw, NO_DTLS)),
            _ => self.warn(format!("unknown flag '{}' ignored", raw.trim())),
        }
        Ok(())
    }

    fn transport(&mut self, text: &str) -> Result<(), OptionError> {
        let trimmed = text.trim();
        if trimmed.eq_ignore_ascii_case("accept") {
            self.options.transport = Some(TransportOverride::Accept);
            return Ok(());
        }
        if let Some(proto) = TransportProtocol::from_sdp(trimmed) {
            self.options.transport = Some(TransportOverride::Profile(proto));
            return Ok(());
        }
        let upper = trimmed.to_ascii_uppercase();
        if upper.contains("TLS") || upper.contains("DTLS") {
            return Err(unsupported(
                &format!("transport-protocol={trimmed}"),
                NO_DTLS,
            ));
        }
        Err(invalid(
            "transport-protocol",
            "expected RTP/AVP, RTP/AVPF, RTP/SAVP, RTP/SAVPF or accept",
        ))
    }

    fn replace(&mut self, item: &str) -> Result<(), OptionError> {
        self.tick()?;
        let r = &mut self.options.replace;
        match normalize(item).as_str() {
            "origin" => r.origin = true,
            "origin-full" => r.origin_full = true,
            "username" => r.username = true,
            "session-name" => r.session_name = true,
            "sdp-version" => r.sdp_version = true,
            "force-increment-sdp-ver" | "force-increment-sdp-version" => r.force_increment = true,
            "zero-address" => r.zero_address = true,
            // The relay is always in the media path: c= always points at it.
            "session-connection" => {}
            _ => self.warn(format!("unknown replace item '{}' ignored", item.trim())),
        }
        Ok(())
    }

    fn rtcp_mux(&mut self, item: &str) -> Result<(), OptionError> {
        self.tick()?;
        let m = &mut self.options.rtcp_mux;
        match normalize(item).as_str() {
            "offer" => m.offer = true,
            "require" => m.require = true,
            "demux" => m.demux = true,
            "accept" => m.accept = true,
            "reject" => m.reject = true,
            _ => {
                return Err(invalid(
                    "rtcp-mux",
                    "expected offer, require, demux, accept or reject",
                ))
            }
        }
        Ok(())
    }

    fn sdes(&mut self, item: &str) -> Result<(), OptionError> {
        self.tick()?;
        let item = item.trim();
        let lower = item.to_ascii_lowercase();
        let s = &mut self.options.sdes;
        if let Some(list) = lower.strip_prefix("order:") {
            s.order = suite_list(item.get(item.len() - list.len()..).unwrap_or(list));
            return Ok(());
        }
        if let Some(list) = lower.strip_prefix("offerer_pref:") {
            s.offerer_pref = suite_list(item.get(item.len() - list.len()..).unwrap_or(list));
            return Ok(());
        }
        match lower.as_str() {
            "off" | "no" | "disable" => s.off = true,
            "nonew" => s.nonew = true,
            "pad" => s.pad = true,
            "lifetime" => s.lifetime = true,
            "unencrypted_srtp" => s.unencrypted_srtp = Some(true),
            "encrypted_srtp" => s.unencrypted_srtp = Some(false),
            "unencrypted_srtcp" => s.unencrypted_srtcp = Some(true),
            "encrypted_srtcp" => s.unencrypted_srtcp = Some(false),
            "unauthenticated_srtp" => s.unauthenticated_srtp = Some(true),
            "authenticated_srtp" => s.unauthenticated_srtp = Some(false),
            // Our re-offers already keep the negotiated keys, and we never weigh DTLS.
            "static" | "prefer" => {}
            _ => {
                if let Some(suite) = lower.strip_prefix("no-") {
                    let name = item.get(3..).unwrap_or(suite);
                    s.exclude.push(SuiteName::parse(name));
                } else if let Some(suite) = lower.strip_prefix("only-") {
                    let name = item.get(5..).unwrap_or(suite);
                    s.only.push(SuiteName::parse(name));
                } else {
                    return Err(invalid("SDES", "unknown SDES option"));
                }
            }
        }
        Ok(())
    }

    fn osrtp(&mut self, item: &str) -> Result<(), OptionError> {
        self.tick()?;
        match normalize(item).as_str() {
            "offer" | "offer-rfc" => self.options.osrtp_offer = true,
            // A plain answer to a best-effort offer is already accepted (RFC 8643 §4).
            "accept" | "accept-rfc" => {}
            "offer-legacy" | "accept-legacy" => {
                return Err(unsupported(
                    &format!("OSRTP={}", item.trim()),
                    "legacy best-effort SRTP (duplicated m= lines) is not supported",
                ))
            }
            _ => {
                return Err(invalid(
                    "OSRTP",
                    "expected offer, offer-RFC, accept or accept-RFC",
                ))
            }
        }
        Ok(())
    }

    fn ice(&mut self, item: &str) -> Result<(), OptionError> {
        self.tick()?;
        match normalize(item).as_str() {
            "remove" => self.options.ice_remove = true,
            "force" | "default" | "optional" | "force-relay" | "trickle" | "ice2" | "lite"
            | "lite-both" | "lite-forward" | "lite-backward" | "lite-off" => self.warn(format!(
                "ICE={} is not supported: ICE attributes are removed",
                item.trim()
            )),
            _ => return Err(invalid("ICE", "unknown ICE option")),
        }
        Ok(())
    }

    fn endpoint_learning(&mut self, raw: &str, text: &str) -> Result<(), OptionError> {
        self.options.endpoint_learning = Some(match normalize(text).as_str() {
            "off" => EndpointLearning::Off,
            "immediate" | "delayed" | "heuristic" => EndpointLearning::Learn,
            _ => {
                return Err(invalid(
                    raw,
                    "expected off, immediate, delayed or heuristic",
                ))
            }
        });
        Ok(())
    }
}

/// `A;B;C` or `A,B,C`.
fn suite_list(list: &str) -> Vec<SuiteName> {
    list.split([';', ','])
        .filter(|s| !s.trim().is_empty())
        .map(SuiteName::parse)
        .collect()
}

/// Parses Kamailio's `rtpp_flags` string (rtpengine's daemon-side flag parsing): words
/// separated by white space; `key=value`, `key=[v1 v2 ...]` (lists nest), or a bare flag.
/// Returns (key, value) pairs; a bare flag has no value.
fn parse_flag_string(input: &str) -> Result<Vec<(String, Option<Opt>)>, OptionError> {
    let mut scanner = FlagScanner {
        bytes: input.as_bytes(),
        input,
        pos: 0,
    };
    let mut out = Vec::new();
    loop {
        scanner.skip_space();
        if scanner.pos >= scanner.bytes.len() {
            break;
        }
        if out.len() >= MAX_OPTIONS {
            return Err(OptionError::TooManyOptions { max: MAX_OPTIONS });
        }
        let word = scanner.word()?;
        if scanner.peek() == Some(b'=') {
            scanner.pos += 1;
            let value = scanner.value(0)?;
            out.push((word, Some(value)));
        } else {
            out.push((word, None));
        }
    }
    Ok(out)
}

struct FlagScanner<'s> {
    input: &'s str,
    bytes: &'s [u8],
    pos: usize,
}

impl FlagScanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    /// Up to white space, `=`, `[` or `]`.
    fn word(&mut self) -> Result<String, OptionError> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| !b.is_ascii_whitespace() && !matches!(b, b'=' | b'[' | b']'))
        {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(OptionError::InvalidFlagString {
                reason: "expected a word",
            });
        }
        Ok(self
            .input
            .get(start..self.pos)
            .unwrap_or_default()
            .to_owned())
    }

    fn value(&mut self, depth: usize) -> Result<Opt, OptionError> {
        if self.peek() != Some(b'[') {
            // A scalar may contain '=' (`SDES-order:...` does not, but codec specs do).
            let start = self.pos;
            while self
                .peek()
                .is_some_and(|b| !b.is_ascii_whitespace() && !matches!(b, b'[' | b']'))
            {
                self.pos += 1;
            }
            return Ok(Opt::Str(
                self.input
                    .get(start..self.pos)
                    .unwrap_or_default()
                    .to_owned(),
            ));
        }
        if depth >= MAX_FLAG_DEPTH {
            return Err(OptionError::InvalidFlagString {
                reason: "brackets nest too deeply",
            });
        }
        self.pos += 1;
        let mut items = Vec::new();
        let mut entries = Vec::new();
        loop {
            self.skip_space();
            match self.peek() {
                None => {
                    return Err(OptionError::InvalidFlagString {
                        reason: "unterminated [",
                    })
                }
                Some(b']') => {
                    self.pos += 1;
                    break;
                }
                Some(_) => {}
            }
            if items.len() + entries.len() >= MAX_OPTIONS {
                return Err(OptionError::TooManyOptions { max: MAX_OPTIONS });
            }
            let word = self.word()?;
            if self.peek() == Some(b'=') {
                self.pos += 1;
                entries.push((word, self.value(depth + 1)?));
            } else {
                items.push(Opt::Str(word));
            }
        }
        if entries.is_empty() {
            Ok(Opt::List(items))
        } else {
            entries.extend(
                items
                    .into_iter()
                    .map(|i| (i.text().unwrap_or_default(), Opt::Str(String::new()))),
            );
            Ok(Opt::Dict(entries))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn s(text: &str) -> Value<'static> {
        Value::string(text)
    }

    fn list(items: &[&str]) -> Value<'static> {
        Value::List(items.iter().map(|i| s(i)).collect())
    }

    fn request(entries: Vec<(&str, Value<'static>)>) -> Result<Request, OptionError> {
        let mut all = vec![(Cow::Borrowed(&b"command"[..]), s("offer"))];
        all.extend(
            entries
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k.as_bytes().to_vec()), v)),
        );
        parse_request(&Value::Dict(all))
    }

    fn ok(entries: Vec<(&str, Value<'static>)>) -> Request {
        match request(entries) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    fn refused(entries: Vec<(&str, Value<'static>)>) -> String {
        match request(entries) {
            Ok(r) => panic!("accepted: {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn commands_are_recognised_and_unsupported_ones_named() {
        for (name, command) in [
            ("ping", Command::Ping),
            ("offer", Command::Offer),
            ("answer", Command::Answer),
            ("delete", Command::Delete),
            ("query", Command::Query),
            ("list", Command::List),
            ("statistics", Command::Statistics),
        ] {
            let body = Value::dict([("command", s(name))]);
            assert_eq!(parse_request(&body).map(|r| r.command), Ok(command));
        }
        let body = Value::dict([("command", s("start recording"))]);
        assert_eq!(
            parse_request(&body).map_err(|e| e.to_string()),
            Err("command 'start recording' is not supported".to_owned())
        );
        let body = Value::dict([("command", s("dance"))]);
        assert_eq!(
            parse_request(&body).map_err(|e| e.to_string()),
            Err("Unrecognized command 'dance'".to_owned())
        );
        assert_eq!(
            parse_request(&Value::dict([("call-id", s("x"))])),
            Err(OptionError::MissingCommand)
        );
        assert_eq!(parse_request(&s("x")), Err(OptionError::NotADictionary));
    }

    #[test]
    fn identifiers_and_addresses_are_read_with_either_spelling() {
        let r = ok(vec![
            ("call-id", s("c1@host")),
            ("from-tag", s("ft")),
            ("to-tag", s("tt")),
            ("via-branch", s("z9hG4bK1")),
            ("label", s("caller")),
            ("sdp", s("v=0\r\n")),
            ("received from", list(&["IP4", "192.0.2.7"])),
            ("media address", s("198.51.100.1")),
            ("address family", s("IP6")),
            ("delete-delay", Value::Int(5)),
            ("limit", s("10")),
        ]);
        let o = &r.options;
        assert_eq!(o.call_id.as_deref(), Some("c1@host"));
        assert_eq!(o.from_tag.as_deref(), Some("ft"));
        assert_eq!(o.to_tag.as_deref(), Some("tt"));
        assert_eq!(o.via_branch.as_deref(), Some("z9hG4bK1"));
        assert_eq!(o.label.as_deref(), Some("caller"));
        assert_eq!(o.sdp.as_ref().map(SdpBody::as_str), Some("v=0\r\n"));
        assert_eq!(format!("{:?}", o.sdp), "Some(SdpBody(<5 bytes>))");
        assert_eq!(o.received_from, Some("192.0.2.7".parse().expect("ip")));
        assert_eq!(o.media_address, Some("198.51.100.1".parse().expect("ip")));
        assert_eq!(o.address_family, Some(AddrType::Ip6));
        assert_eq!((o.delete_delay, o.limit), (Some(5), Some(10)));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn transport_protocol_selects_the_profile_and_refuses_dtls() {
        for (text, proto) in [
            ("RTP/AVP", TransportProtocol::RtpAvp),
            ("RTP/AVPF", TransportProtocol::RtpAvpf),
            ("RTP/SAVP", TransportProtocol::RtpSavp),
            ("RTP/SAVPF", TransportProtocol::RtpSavpf),
        ] {
            let r = ok(vec![("transport-protocol", s(text))]);
            assert_eq!(r.options.transport, Some(TransportOverride::Profile(proto)));
        }
        let r = ok(vec![("transport protocol", s("accept"))]);
        assert_eq!(r.options.transport, Some(TransportOverride::Accept));
        assert_eq!(
            refused(vec![("transport-protocol", s("UDP/TLS/RTP/SAVPF"))]),
            "option 'transport-protocol=UDP/TLS/RTP/SAVPF' is not supported: DTLS-SRTP is not supported (SDES only)"
        );
        assert!(refused(vec![("transport-protocol", s("RTP/XYZ"))]).starts_with("invalid value"));
    }

    #[test]
    fn flags_set_address_source_latching_and_rtcp_attributes() {
        let r = ok(vec![(
            "flags",
            list(&[
                "SIP source address",
                "asymmetric",
                "strict-source",
                "port latching",
                "symmetric",
                "no-rtcp-attribute",
                "full rtcp attribute",
                "fatal",
                "fast",
                "to-tag",
                "reset",
                "original-sendrecv",
            ]),
        )]);
        let o = &r.options;
        assert_eq!(o.address_source, AddressSource::SipSource);
        // symmetric after asymmetric: the later one wins.
        assert!(!o.asymmetric);
        assert_eq!(o.strict_source, Some(true));
        assert!(o.no_rtcp_attribute && o.full_rtcp_attribute);
        assert!(o.fatal && o.fast && o.delete_to_tag);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        let r = ok(vec![(
            "flags",
            list(&["trust-address", "media-handover", "asymmetric"]),
        )]);
        assert_eq!(r.options.address_source, AddressSource::Sdp);
        assert_eq!(r.options.strict_source, Some(false));
        assert!(r.options.asymmetric);
    }

    #[test]
    fn unknown_and_unsupported_flags_warn_or_fail_precisely() {
        let r = ok(vec![("flags", list(&["trickle ICE", "frobnicate"]))]);
        assert_eq!(
            r.warnings,
            [
                "flag 'trickle ICE' is not supported and was ignored",
                "unknown flag 'frobnicate' ignored"
            ]
        );
        assert_eq!(
            refused(vec![("flags", list(&["record call"]))]),
            "option 'record call' is not supported: call recording is not supported"
        );
        assert_eq!(
            refused(vec![("flags", list(&["codec-strip-PCMA"]))]),
            "option 'codec-strip-PCMA' is not supported: relayd forwards media without transcoding"
        );
        assert_eq!(
            refused(vec![("codec", Value::dict([("strip", list(&["PCMA"]))]))]),
            "option 'codec' is not supported: relayd forwards media without transcoding"
        );
        // An empty codec dictionary changes nothing.
        ok(vec![("codec", Value::dict([("strip", list(&[]))]))]);
        let r = ok(vec![("TOS", Value::Int(184)), ("frob", s("x"))]);
        assert_eq!(
            r.warnings,
            [
                "option 'TOS' is not supported and was ignored",
                "unknown option 'frob' ignored"
            ]
        );
    }

    #[test]
    fn replace_items_are_read_from_list_and_flags() {
        let r = ok(vec![
            (
                "replace",
                list(&[
                    "origin",
                    "session connection",
                    "session-name",
                    "SDP version",
                ]),
            ),
            ("flags", list(&["replace-zero-address", "replace-username"])),
        ]);
        let replace = r.options.replace;
        assert!(replace.origin && replace.session_name && replace.sdp_version);
        assert!(replace.zero_address && replace.username);
        assert!(!replace.origin_full && !replace.force_increment);
        let r = ok(vec![(
            "replace",
            list(&["origin-full", "force-increment-sdp-ver"]),
        )]);
        assert!(r.options.replace.origin_full && r.options.replace.force_increment);
    }

    #[test]
    fn rtcp_mux_items_are_read_and_unknown_ones_refused() {
        let r = ok(vec![(
            "rtcp-mux",
            list(&["offer", "require", "demux", "accept", "reject"]),
        )]);
        let m = r.options.rtcp_mux;
        assert!(m.offer && m.require && m.demux && m.accept && m.reject);
        let r = ok(vec![("flags", list(&["rtcp-mux-demux"]))]);
        assert!(r.options.rtcp_mux.demux);
        assert!(refused(vec![("rtcp-mux", list(&["sideways"]))]).contains("rtcp-mux"));
    }

    #[test]
    fn sdes_items_map_onto_suites_and_parameters() {
        let r = ok(vec![(
            "SDES",
            list(&[
                "no-AES_CM_128_HMAC_SHA1_32",
                "only-AES_CM_128_HMAC_SHA1_80",
                "only-AEAD_AES_256_GCM",
                "no-NULL_HMAC_SHA1_32",
                "nonew",
                "pad",
                "lifetime",
                "unencrypted_srtp",
                "UNENCRYPTED_SRTCP",
                "authenticated_srtp",
                "order:AEAD_AES_128_GCM;AES_CM_128_HMAC_SHA1_80",
                "offerer_pref:AES_256_CM_HMAC_SHA1_80",
                "static",
            ]),
        )]);
        let sdes = &r.options.sdes;
        assert_eq!(
            sdes.exclude,
            [
                SuiteName::Known(Suite::AesCm128HmacSha1_32),
                SuiteName::Other("NULL_HMAC_SHA1_32".to_owned())
            ]
        );
        assert_eq!(
            sdes.only,
            [
                SuiteName::Known(Suite::AesCm128HmacSha1_80),
                SuiteName::Known(Suite::AeadAes256Gcm)
            ]
        );
        assert!(sdes.nonew && sdes.pad && sdes.lifetime && !sdes.off);
        assert_eq!(
            (
                sdes.unencrypted_srtp,
                sdes.unencrypted_srtcp,
                sdes.unauthenticated_srtp
            ),
            (Some(true), Some(true), Some(false))
        );
        assert_eq!(
            sdes.order,
            [
                SuiteName::Known(Suite::AeadAes128Gcm),
                SuiteName::Known(Suite::AesCm128HmacSha1_80)
            ]
        );
        assert_eq!(
            sdes.offerer_pref,
            [SuiteName::Known(Suite::AesCm256HmacSha1_80)]
        );
        for off in ["off", "no", "disable"] {
            assert!(ok(vec![("SDES", s(off))]).options.sdes.off);
        }
        let r = ok(vec![(
            "flags",
            list(&["SDES-no-AEAD_AES_128_GCM", "SDES-off", "pad crypto"]),
        )]);
        assert_eq!(
            r.options.sdes.exclude,
            [SuiteName::Known(Suite::AeadAes128Gcm)]
        );
        assert!(r.options.sdes.off && r.options.sdes.pad);
        assert!(refused(vec![("SDES", s("sideways"))]).contains("unknown SDES option"));
    }

    #[test]
    fn ice_dtls_and_osrtp_follow_what_we_can_do() {
        let r = ok(vec![("ICE", s("remove")), ("DTLS", s("off"))]);
        assert!(r.options.ice_remove && r.warnings.is_empty());
        let r = ok(vec![("ICE", s("force"))]);
        assert_eq!(
            r.warnings,
            ["ICE=force is not supported: ICE attributes are removed"]
        );
        assert_eq!(
            refused(vec![("DTLS", s("passive"))]),
            "option 'DTLS=passive' is not supported: DTLS-SRTP is not supported (SDES only)"
        );
        assert!(refused(vec![("DTLS-fingerprint", s("SHA-256"))]).contains("DTLS-SRTP"));
        assert!(ok(vec![("OSRTP", list(&["offer"]))]).options.osrtp_offer);
        assert!(refused(vec![("OSRTP", list(&["offer-legacy"]))]).contains("legacy"));
    }

    #[test]
    fn interfaces_come_from_direction_or_named_keys() {
        let r = ok(vec![("direction", list(&["priv", "pub"]))]);
        assert_eq!(
            (
                r.options.from_interface.as_deref(),
                r.options.to_interface.as_deref()
            ),
            (Some("priv"), Some("pub"))
        );
        let r = ok(vec![("from-interface", s("a")), ("to-interface", s("b"))]);
        assert_eq!(
            (
                r.options.from_interface.as_deref(),
                r.options.to_interface.as_deref()
            ),
            (Some("a"), Some("b"))
        );
        assert!(refused(vec![("direction", list(&["a", "b", "c"]))]).contains("two interfaces"));
    }

    #[test]
    fn kamailio_rtpp_flags_string_is_parsed_like_the_dictionary() {
        let r = ok(vec![(
            "rtpp_flags",
            s(
                "replace-origin replace-session-connection via-branch=auto-next strict-source \
               label=callee transport-protocol=RTP/AVP address-family=IP4 \
               direction=priv direction=pub SDES=[no-AES_CM_128_HMAC_SHA1_32 lifetime] \
               rtcp-mux-demux ICE=remove trust-address delete-delay=0 RTP/SAVP",
            ),
        )]);
        let o = &r.options;
        assert!(o.replace.origin);
        assert_eq!(o.via_branch.as_deref(), Some("auto-next"));
        assert_eq!(o.strict_source, Some(true));
        assert_eq!(o.label.as_deref(), Some("callee"));
        // The bare RTP/SAVP came last and wins.
        assert_eq!(
            o.transport,
            Some(TransportOverride::Profile(TransportProtocol::RtpSavp))
        );
        assert_eq!(o.address_family, Some(AddrType::Ip4));
        assert_eq!(
            (o.from_interface.as_deref(), o.to_interface.as_deref()),
            (Some("priv"), Some("pub"))
        );
        assert_eq!(
            o.sdes.exclude,
            [SuiteName::Known(Suite::AesCm128HmacSha1_32)]
        );
        assert!(o.sdes.lifetime && o.rtcp_mux.demux && o.ice_remove);
        assert_eq!(o.delete_delay, Some(0));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);

        assert_eq!(
            refused(vec![("rtpp_flags", s("SDES=[lifetime"))]),
            "invalid rtpp_flags: unterminated ["
        );
        assert_eq!(
            refused(vec![("rtpp_flags", s("=x"))]),
            "invalid rtpp_flags: expected a word"
        );
        assert_eq!(
            refused(vec![("rtpp_flags", s("codec=[strip=[PCMA]]"))]),
            "option 'codec' is not supported: relayd forwards media without transcoding"
        );
        assert!(refused(vec![("rtpp_flags", s("a=[b=[c=[d=[e=[x]]]]]"))]).contains("nest"));
    }

    #[test]
    fn values_of_the_wrong_type_or_range_are_refused() {
        assert!(refused(vec![("call-id", Value::List(vec![]))]).contains("expected a string"));
        assert!(refused(vec![("delete-delay", s("soon"))]).contains("seconds"));
        assert!(refused(vec![("delete-delay", Value::Int(7200))]).contains("3600"));
        assert!(refused(vec![("media-address", s("nowhere"))]).contains("not an IP"));
        assert!(refused(vec![("received-from", list(&["IPX", "1.2.3.4"]))]).contains("IP4"));
        assert!(refused(vec![("address-family", s("IP5"))]).contains("IP4 or IP6"));
        let many: Vec<&str> = vec!["symmetric"; MAX_OPTIONS + 1];
        assert_eq!(
            refused(vec![("flags", list(&many))]),
            format!("too many options (at most {MAX_OPTIONS})")
        );
    }
}
