//! How services are named: protocols, `ADDRESS:PORT` endpoints and VIP
//! ids, with their parsing and printing (shared by the config, the API
//! and the listings).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    str::FromStr,
};

use lb_common::{PROTO_TCP, PROTO_UDP};
use serde::{Deserialize, Serialize};

#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    #[must_use]
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => PROTO_TCP,
            Self::Udp => PROTO_UDP,
        }
    }

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }

    #[must_use]
    pub const fn from_number(n: u8) -> Option<Self> {
        match n {
            PROTO_TCP => Some(Self::Tcp),
            PROTO_UDP => Some(Self::Udp),
            _ => None,
        }
    }
}

/// An address and port, written `198.18.0.100:80`, or `[2001:db8::100]:80`
/// for IPv6 (also in JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: u16,
}

impl Endpoint {
    /// The IPv4 address (the unspecified address for an IPv6 one, which
    /// the model refuses before anything reaches the data path).
    #[must_use]
    pub const fn v4(&self) -> Ipv4Addr {
        match self.addr {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        }
    }

    #[must_use]
    pub const fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }
}

impl From<(Ipv4Addr, u16)> for Endpoint {
    fn from((addr, port): (Ipv4Addr, u16)) -> Self {
        Self {
            addr: IpAddr::V4(addr),
            port,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SocketAddr::new(self.addr, self.port).fmt(f)
    }
}

impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, port) = s.rsplit_once(':').ok_or_else(|| {
            format!("{s:?} is not ADDRESS:PORT (for example 198.18.0.100:80 or [2001:db8::100]:80)")
        })?;
        let addr: IpAddr = match addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
            Some(v6) => IpAddr::V6(
                v6.parse()
                    .map_err(|_| format!("{v6:?} in {s:?} is not an IPv6 address"))?,
            ),
            None if addr.contains(':') => {
                return Err(format!(
                    "{s:?}: write an IPv6 address in brackets, as in [2001:db8::100]:80"
                ))
            }
            None => IpAddr::V4(
                addr.parse()
                    .map_err(|_| format!("{addr:?} in {s:?} is not an IPv4 address"))?,
            ),
        };
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{port:?} in {s:?} is not a port number (1-65535)"))?;
        Ok(Self { addr, port })
    }
}

/// Identifies a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VipId {
    pub endpoint: Endpoint,
    pub protocol: Protocol,
}

impl fmt::Display for VipId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.endpoint, self.protocol.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_of_both_families_round_trip() {
        for text in ["198.18.0.100:80", "[2001:db8:18::100]:80", "[::1]:8080"] {
            let e: Endpoint = text.parse().unwrap();
            assert_eq!(e.to_string(), text);
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<Endpoint>(&json).unwrap(), e);
        }
        let e: Endpoint = "[2001:db8::1]:443".parse().unwrap();
        assert!(e.is_ipv6() && e.v4().is_unspecified());
        assert_eq!(
            Endpoint::from((Ipv4Addr::new(198, 18, 0, 1), 9)).to_string(),
            "198.18.0.1:9"
        );
    }

    #[test]
    fn bad_endpoints_say_what_is_wrong() {
        for (text, says) in [
            ("198.18.0.100", "is not ADDRESS:PORT"),
            ("2001:db8::1:80", "in brackets"),
            ("[2001:db8::zz]:80", "is not an IPv6 address"),
            ("198.18.0.300:80", "is not an IPv4 address"),
            ("198.18.0.1:70000", "is not a port number"),
        ] {
            let e = text.parse::<Endpoint>().unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
