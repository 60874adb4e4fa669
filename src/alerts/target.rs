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

/// Checks a channel's URL: http or https, and every address its host resolves to allowed.
pub async fn check_url(url: &Url, allow_internal: bool) -> Result<(), TargetError> {
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(TargetError::Scheme);
    }
    let host = url.host().ok_or(TargetError::NoHost)?;
    if allow_internal {
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
    if addrs.iter().any(|a| is_internal(a.ip())) {
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
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_internal: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow_internal;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow && addrs.iter().any(|a| is_internal(a.ip())) {
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
    fn redaction_keeps_only_scheme_and_host() {
        assert_eq!(
            redact("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(redact("not a url"), "…");
    }
}
