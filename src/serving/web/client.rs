//! Who is asking: the client address the per-address limits count against,
//! and the HTTP settings that decide it (`http.*`).
//!
//! Behind a load balancer every request comes from the balancer's address, so
//! a per-address limit would lock out everyone at once. `X-Forwarded-For` is
//! believed only when the peer is one of `http.trusted_proxies`; the client is
//! then the rightmost address in the header that is not itself a trusted
//! proxy (entries left of it were written by the client and prove nothing).

use actix_web::HttpRequest;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use std::net::IpAddr;

/// `http.*` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    /// Proxies whose `X-Forwarded-For` is believed (CIDRs; in the environment a
    /// comma-separated list). Empty: the header is ignored.
    #[serde(deserialize_with = "cidr_list")]
    pub trusted_proxies: Vec<IpNet>,
    /// Largest body of any endpoint without its own limit (ingest has
    /// `ingest.max_body_bytes`; login and admin changes take 4 KiB).
    pub max_body_bytes: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings { trusted_proxies: Vec::new(), max_body_bytes: 64 * 1024 }
    }
}

/// Body limit of the console login and of admin state changes.
pub const SMALL_BODY_BYTES: usize = 4 * 1024;

fn cidr_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    let items = match Raw::deserialize(d)? {
        Raw::One(s) => s.split(',').map(str::to_owned).collect(),
        Raw::Many(v) => v,
    };
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>().or_else(|_| s.parse::<IpAddr>().map(IpNet::from)).map_err(|_| {
                serde::de::Error::custom(format!("http.trusted_proxies: {s:?} is not a CIDR or an address"))
            })
        })
        .collect()
}

/// The client address of a request (see the module doc); `None` when the
/// peer is unknown (tests calling handlers directly).
pub fn client_ip(req: &HttpRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    if !is_trusted(peer, trusted) {
        return Some(peer);
    }
    let mut client = peer;
    // Every X-Forwarded-For line, right to left: the rightmost entries were
    // appended by our own proxies.
    let headers: Vec<&str> =
        req.headers().get_all("x-forwarded-for").filter_map(|v| v.to_str().ok()).collect::<Vec<_>>();
    for entry in headers.iter().rev().flat_map(|h| h.rsplit(',')) {
        match parse_entry(entry) {
            Some(ip) => {
                client = ip;
                if !is_trusted(ip, trusted) {
                    break;
                }
            }
            // Garbage in the chain: stop at the last address we could read.
            None => break,
        }
    }
    Some(client)
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|n| n.contains(&ip))
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn parse_entry(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    // "1.2.3.4:5678" or "[::1]:5678"
    s.parse::<std::net::SocketAddr>().ok().map(|a| canonical(a.ip()))
}

/// True when the request came straight from this machine (no proxy in front
/// said it forwarded someone else's request).
pub fn is_local_direct(req: &HttpRequest) -> bool {
    req.peer_addr().is_some_and(|a| canonical(a.ip()).is_loopback())
        && !req.headers().contains_key("x-forwarded-for")
        && !req.headers().contains_key("forwarded")
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn req(peer: &str, xff: &[&str]) -> HttpRequest {
        let mut r = TestRequest::default().peer_addr(peer.parse().unwrap());
        for h in xff {
            r = r.append_header(("X-Forwarded-For", *h));
        }
        r.to_http_request()
    }

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn the_header_is_ignored_unless_the_peer_is_trusted() {
        let r = req("203.0.113.7:4000", &["198.51.100.1"]);
        assert_eq!(client_ip(&r, &[]), Some("203.0.113.7".parse().unwrap()));
        assert_eq!(client_ip(&r, &nets(&["10.0.0.0/8"])), Some("203.0.113.7".parse().unwrap()));
    }

    #[test]
    fn the_rightmost_untrusted_entry_is_the_client() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The client claims to be 1.1.1.1; the ALB appended the real address.
        let r = req("10.0.1.5:4000", &["1.1.1.1, 198.51.100.9, 10.0.2.2"]);
        assert_eq!(client_ip(&r, &trusted), Some("198.51.100.9".parse().unwrap()));
        let r = req("10.0.1.5:4000", &["1.1.1.1", "198.51.100.9"]);
        assert_eq!(client_ip(&r, &trusted), Some("198.51.100.9".parse().unwrap()));
        // Only proxies in the chain: the leftmost we could read.
        let r = req("10.0.1.5:4000", &["10.0.3.3"]);
        assert_eq!(client_ip(&r, &trusted), Some("10.0.3.3".parse().unwrap()));
        // No header: the proxy itself.
        let r = req("10.0.1.5:4000", &[]);
        assert_eq!(client_ip(&r, &trusted), Some("10.0.1.5".parse().unwrap()));
        // Garbage stops the walk.
        let r = req("10.0.1.5:4000", &["evil, 10.0.3.3"]);
        assert_eq!(client_ip(&r, &trusted), Some("10.0.3.3".parse().unwrap()));
    }

    #[test]
    fn settings_parse_a_comma_separated_list() {
        let s: HttpSettings =
            serde_json::from_value(serde_json::json!({ "trusted_proxies": "10.0.0.0/16, 127.0.0.1" })).unwrap();
        assert_eq!(s.trusted_proxies, nets(&["10.0.0.0/16", "127.0.0.1/32"]));
        let e = serde_json::from_value::<HttpSettings>(serde_json::json!({ "trusted_proxies": "nope" })).unwrap_err();
        assert!(e.to_string().contains("trusted_proxies"), "{e}");
    }
}
