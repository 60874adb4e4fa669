//! Which addresses an alert may be sent to. A webhook URL is chosen by a project's Maintainer,
//! so without a check it would let them make the gateway call its own loopback services, the
//! cloud metadata address or the private network (server-side request forgery). Addresses are
//! checked when a channel is created, and again on every connection through the HTTP client's
//! resolver ([`GuardedResolver`]), so a name that later resolves elsewhere, or a redirect, is
//! caught too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("only http and https URLs are allowed")]
    Scheme,
    #[error("the URL has no host")]
    NoHost,
    #[error("requests to the local network are not allowed")]
    Private,
    #[error("the host could not be resolved")]
    Unresolved,
}

/// True for addresses an alert must not reach unless the operator allows it: loopback,
/// private (RFC 1918, unique local), link-local (which includes cloud metadata services),
/// shared (CGNAT), unspecified, broadcast, multicast and documentation ranges.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7 unique local, fe80::/10 link-local
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                // 2001:db8::/32 documentation
                || (seg[0] == 0x2001 && seg[1] == 0x0db8)
                // ::ffff:0:0/96 handled above; 64:ff9b::/96 NAT64 may reach IPv4 internals
                || (seg[0] == 0x64 && seg[1] == 0xff9b && is_internal_v4(low_v4(v6)))
        }
    }
}

fn low_v4(v6: Ipv6Addr) -> Ipv4Addr {
    let o = v6.octets();
    Ipv4Addr::new(o[12], o[13], o[14], o[15])
}

fn is_internal_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || o[0] == 0
        // 100.64.0.0/10 shared address space
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        // 198.18.0.0/15 benchmarking
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        // 240.0.0.0/4 reserved
        || o[0] >= 240
}

/// Which internal addresses the operator allows: all of them, or some networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed {
    pub all: bool,
    /// (network address, prefix length).
    pub networks: Vec<(IpAddr, u8)>,
}

impl Allowed {
    /// Whether an alert may be sent to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.all || !is_internal(ip) || self.networks.iter().any(|&(n, p)| in_network(ip, n, p))
    }
}

/// Parses `10.0.0.0/8`, `fd00::/8` or a single address.
pub fn parse_network(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = match s.trim().split_once('/') {
        Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
        None => (s.trim().parse::<IpAddr>().ok()?, None),
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(max);
    (prefix <= max).then_some((addr, prefix))
}

fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Checks a channel's URL: http or https, and every address its host resolves to allowed.
pub async fn check_url(url: &Url, allowed: &Allowed) -> Result<(), TargetError> {
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(TargetError::Scheme);
    }
    let host = url.host().ok_or(TargetError::NoHost)?;
    if allowed.all {
        return Ok(());
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = match host {
        Host::Ipv4(ip) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Host::Ipv6(ip) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Host::Domain(name) => tokio::net::lookup_host((name, port))
            .await
            .map_err(|_| TargetError::Unresolved)?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(TargetError::Unresolved);
    }
    if addrs.iter().any(|a| !allowed.permits(a.ip())) {
        return Err(TargetError::Private);
    }
    Ok(())
}

/// The literal address of a URL's host, if it is one; such hosts never reach the resolver.
pub fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        Host::Domain(_) => None,
    }
}

/// The HTTP client's resolver: the system's, with internal addresses refused unless allowed.
/// Every connection the client opens, a redirect's included, resolves through it.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub allowed: std::sync::Arc<Allowed>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allowed = self.allowed.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            // A name with any forbidden address is refused whole: keeping only the allowed
            // ones would still let a name that mixes both reach the forbidden one later.
            if addrs.iter().any(|a| !allowed.permits(a.ip())) {
                return Err(
                    Box::new(TargetError::Private) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A URL as the API and the log may show it: scheme and host only. Webhook URLs carry their
/// credentials in the path (Slack, Discord, Teams), so the rest is never shown.
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => match u.host_str() {
            Some(h) => format!("{}://{}/…", u.scheme(), h),
            None => "…".into(),
        },
        Err(_) => "…".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            assert!(!is_internal(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn allowed_networks() {
        let allowed = Allowed {
            all: false,
            networks: ["127.0.0.0/8", "fd00::/8", "10.1.2.3"]
                .iter()
                .map(|n| parse_network(n).expect("network"))
                .collect(),
        };
        for ok in [
            "127.0.0.1",
            "127.9.9.9",
            "fd12::1",
            "10.1.2.3",
            "8.8.8.8",
            "::ffff:127.0.0.1",
        ] {
            assert!(allowed.permits(ok.parse().expect("ip")), "{ok}");
        }
        for refused in ["10.1.2.4", "::1", "169.254.169.254", "192.168.0.1"] {
            assert!(!allowed.permits(refused.parse().expect("ip")), "{refused}");
        }
        assert_eq!(parse_network("10.0.0.0/33"), None);
        assert_eq!(parse_network("nonsense"), None);
    }

    #[test]
    fn redaction_keeps_only_scheme_and_host() {
        assert_eq!(
            redact("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(redact("not a url"), "…");
    }
}
