//! Call routing from the configuration (IO-free): which trunk or endpoint a request comes from,
//! which route matches, and where the outgoing INVITE goes.
//!
//! Trunk hosts are IP literals or names resolved once at startup by the binary (the resolved
//! addresses come in as [`Resolved`]); RFC 3263 NAPTR/SRV selection is not done: a trunk's URI
//! names its transport (`sips:` or `;transport=`) and port, or the defaults apply (UDP 5060,
//! TLS 5061).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use crate::{
    config::{Config, RouteConfig, SrtpMode, TrunkConfig},
    sip::{Host, Transport, Uri},
};

/// Names resolved at startup: trunk host name → address.
pub type Resolved = HashMap<String, IpAddr>;

/// Where a request came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A configured trunk (matched by source address).
    Trunk(String),
    /// A registered or allowed endpoint.
    Endpoint,
}

impl Source {
    /// The name routes use in `from`.
    pub fn route_name(&self) -> &str {
        match self {
            Self::Trunk(name) => name,
            Self::Endpoint => "endpoints",
        }
    }
}

/// A SIP next hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// Transport to use.
    pub transport: Transport,
    /// Address and port.
    pub address: SocketAddr,
    /// Name for TLS SNI and certificate checks (domain trunks).
    pub server_name: Option<String>,
}

/// What a route resolved to. (One per INVITE, never stored in bulk: the size difference
/// between the variants does not matter.)
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Destination {
    /// Send to a trunk.
    Trunk {
        /// Trunk name.
        trunk: String,
        /// Request-URI of the outgoing INVITE.
        request_uri: Uri,
        /// Where to send it.
        next_hop: NextHop,
    },
    /// Look the Request-URI's AOR up in the registrar.
    Registrar {
        /// Address of record (`sip:user@host`), after prefix stripping.
        aor: String,
    },
}

/// Routing failures, each with the SIP status to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// No route matched.
    #[error("no route for {uri}")]
    NoRoute {
        /// The Request-URI.
        uri: String,
    },
    /// The Request-URI is not a SIP URI.
    #[error("request-uri scheme not supported")]
    UnsupportedScheme,
    /// A trunk's host has no address.
    #[error("trunk {trunk} host {host} did not resolve")]
    Unresolved {
        /// Trunk name.
        trunk: String,
        /// Host name.
        host: String,
    },
}

impl RouteError {
    /// The SIP status code to answer with.
    pub fn sip_status(&self) -> u16 {
        match self {
            Self::NoRoute { .. } => 404,
            Self::UnsupportedScheme => 416,
            Self::Unresolved { .. } => 503,
        }
    }
}

/// The first route matching `source` and `request_uri`, and its destination.
pub fn route<'c>(
    config: &'c Config,
    resolved: &Resolved,
    source: &Source,
    request_uri: &Uri,
) -> Result<(&'c RouteConfig, Destination), RouteError> {
    let sip = request_uri.as_sip().ok_or(RouteError::UnsupportedScheme)?;
    let user = sip.user().unwrap_or("");
    let host = host_text(sip.host());
    let matched = config
        .routes
        .iter()
        .find(|route| {
            route
                .from
                .as_deref()
                .is_none_or(|from| from == source.route_name())
                && route
                    .user_prefix
                    .as_deref()
                    .is_none_or(|prefix| user.starts_with(prefix))
                && route
                    .domain
                    .as_deref()
                    .is_none_or(|domain| domain.eq_ignore_ascii_case(&host))
        })
        .ok_or_else(|| RouteError::NoRoute {
            uri: request_uri.to_string(),
        })?;
    let user = user.get(matched.strip_prefix..).unwrap_or("");
    let destination = if matched.to == "registrar" {
        Destination::Registrar {
            aor: aor_of(user, &host),
        }
    } else {
        let trunk = config
            .trunk(&matched.to)
            .ok_or_else(|| RouteError::NoRoute {
                uri: request_uri.to_string(),
            })?;
        trunk_destination(trunk, resolved, user)?
    };
    Ok((matched, destination))
}

/// The request to a trunk: its URI with the called user put in.
pub fn trunk_destination(
    trunk: &TrunkConfig,
    resolved: &Resolved,
    user: &str,
) -> Result<Destination, RouteError> {
    let mut request_uri = Uri::parse(&trunk.uri).map_err(|_| RouteError::UnsupportedScheme)?;
    let next_hop = next_hop(&request_uri, resolved).ok_or_else(|| RouteError::Unresolved {
        trunk: trunk.name.clone(),
        host: request_uri.host().map(host_text).unwrap_or_default(),
    })?;
    if let Some(sip) = request_uri.as_sip_mut() {
        if sip.user().is_none() && !user.is_empty() {
            // A user that does not parse (illegal characters) is left out rather than sent on.
            let _ = sip.set_user(Some(user));
        }
    }
    Ok(Destination::Trunk {
        trunk: trunk.name.clone(),
        request_uri,
        next_hop,
    })
}

/// Transport, address and TLS name of a SIP URI (RFC 3261 §19.1.2 defaults; `sips:` means TLS,
/// RFC 3261 §26.2.2).
pub fn next_hop(uri: &Uri, resolved: &Resolved) -> Option<NextHop> {
    let sip = uri.as_sip()?;
    let transport = match sip.transport() {
        _ if sip.is_secure() => Transport::Tls,
        Some(Transport::Tcp) => Transport::Tcp,
        Some(Transport::Tls) => Transport::Tls,
        Some(Transport::Udp) | None => Transport::Udp,
        Some(_) => return None,
    };
    let port = sip.port().unwrap_or_else(|| transport.default_port());
    let (ip, server_name) = match sip.host() {
        Host::Domain(name) => (
            *resolved.get(&name.to_ascii_lowercase())?,
            Some(name.clone()),
        ),
        host => (host.ip()?, None),
    };
    Some(NextHop {
        transport,
        address: SocketAddr::new(ip, port),
        server_name,
    })
}

/// `sip:user@host` with the host lower-cased (domains compare case-insensitively, RFC 3261
/// §19.1.4); the user part stays as written.
pub fn aor_of(user: &str, host: &str) -> String {
    if user.is_empty() {
        format!("sip:{}", host.to_ascii_lowercase())
    } else {
        format!("sip:{user}@{}", host.to_ascii_lowercase())
    }
}

/// A host as text (`[v6]` for IPv6).
pub fn host_text(host: &Host) -> String {
    match host {
        Host::Domain(name) => name.to_ascii_lowercase(),
        Host::Ipv4(ip) => ip.to_string(),
        Host::Ipv6(ip) => format!("[{ip}]"),
    }
}

/// Media policy of a source or destination.
pub fn media_policy<'c>(
    config: &'c Config,
    trunk: Option<&str>,
) -> (SrtpMode, &'c [String], &'c str) {
    match trunk.and_then(|name| config.trunk(name)) {
        Some(trunk) => (trunk.srtp, &trunk.suites, &trunk.relay_interface),
        None => (
            config.endpoints.srtp,
            &config.endpoints.suites,
            &config.endpoints.relay_interface,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let config: Config = toml::from_str(
            r#"
            [[trunks]]
            name = "carrier"
            uri = "sips:sbc.carrier.test"
            allow_from = ["198.18.0.0/24"]
            srtp = "mandatory"

            [[trunks]]
            name = "pbx"
            uri = "sip:198.19.0.10;transport=tcp"

            [[routes]]
            name = "carrier-in"
            from = "carrier"
            to = "pbx"

            [[routes]]
            name = "international"
            from = "pbx"
            user_prefix = "00"
            strip_prefix = 2
            to = "carrier"

            [[routes]]
            name = "local"
            domain = "example.com"
            to = "registrar"
            "#,
        )
        .expect("parses");
        config.validate().expect("valid");
        config
    }

    fn resolved() -> Resolved {
        HashMap::from([("sbc.carrier.test".to_owned(), IpAddr::from([198, 18, 0, 5]))])
    }

    #[test]
    fn carrier_calls_go_to_the_pbx_over_tcp() {
        let config = config();
        let uri = Uri::parse("sip:+4420123@198.18.0.1").unwrap();
        let (route, dest) =
            route(&config, &resolved(), &Source::Trunk("carrier".into()), &uri).unwrap();
        assert_eq!(route.name, "carrier-in");
        let Destination::Trunk {
            request_uri,
            next_hop,
            ..
        } = dest
        else {
            panic!("expected a trunk")
        };
        assert_eq!(
            request_uri.to_string(),
            "sip:+4420123@198.19.0.10;transport=tcp"
        );
        assert_eq!(next_hop.transport, Transport::Tcp);
        assert_eq!(next_hop.address, SocketAddr::from(([198, 19, 0, 10], 5060)));
    }

    #[test]
    fn sips_trunk_means_tls_5061_with_the_name_for_sni_and_prefix_stripped() {
        let config = config();
        let uri = Uri::parse("sip:0044123@pbx.local").unwrap();
        let (_, dest) = route(&config, &resolved(), &Source::Trunk("pbx".into()), &uri).unwrap();
        let Destination::Trunk {
            request_uri,
            next_hop,
            ..
        } = dest
        else {
            panic!("expected a trunk")
        };
        assert_eq!(request_uri.to_string(), "sips:44123@sbc.carrier.test");
        assert_eq!(next_hop.transport, Transport::Tls);
        assert_eq!(next_hop.address, SocketAddr::from(([198, 18, 0, 5], 5061)));
        assert_eq!(next_hop.server_name.as_deref(), Some("sbc.carrier.test"));
    }

    #[test]
    fn endpoints_reach_the_registrar_by_domain_and_unmatched_is_404() {
        let config = config();
        let uri = Uri::parse("sip:alice@EXAMPLE.com").unwrap();
        let (_, dest) = route(&config, &resolved(), &Source::Endpoint, &uri).unwrap();
        assert_eq!(
            dest,
            Destination::Registrar {
                aor: "sip:alice@example.com".into()
            }
        );
        let err = route(
            &config,
            &resolved(),
            &Source::Endpoint,
            &Uri::parse("sip:bob@elsewhere.net").unwrap(),
        )
        .unwrap_err();
        assert_eq!(err.sip_status(), 404);
        let tel = Uri::parse("tel:+123").unwrap();
        assert_eq!(
            route(&config, &resolved(), &Source::Endpoint, &tel)
                .unwrap_err()
                .sip_status(),
            416
        );
    }

    #[test]
    fn unresolved_trunk_host_is_503() {
        let config = config();
        let uri = Uri::parse("sip:0044@x").unwrap();
        let err = route(
            &config,
            &Resolved::new(),
            &Source::Trunk("pbx".into()),
            &uri,
        )
        .unwrap_err();
        assert_eq!(err.sip_status(), 503);
    }
}
