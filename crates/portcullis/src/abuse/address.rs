//! The client address as the limits count it: the socket peer unless a trusted
//! proxy forwarded the request, and an IPv6 /64 as one client.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// The rate-limit identity of a client: its IPv4 address, or its IPv6 /64 — one
/// IPv6 host usually owns a whole /64, so per-address limits would not limit it.
pub fn rate_key(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => {
            let seg = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", seg[0], seg[1], seg[2], seg[3])
        }
        _ => ip.to_owned(),
    }
}

/// Resolves the client address: the socket peer, unless the peer is a trusted
/// proxy; then `X-Forwarded-For` is read right to left, skipping trusted hops, and
/// the first untrusted address is the client. A header from an untrusted peer is
/// ignored entirely, so clients cannot spoof their address.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    // `::ffff:10.0.0.1` (a dual-stack listener) is the IPv4 address it carries.
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(header) = forwarded_for else { return peer };
    let mut client = peer;
    for hop in header.rsplit(',') {
        let hop = hop.trim();
        let parsed = hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()));
        let Some(ip) = parsed else { break };
        let ip = ip.to_canonical();
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer_untrusted: IpAddr = "203.0.113.9".parse().unwrap();
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(client_ip(peer_untrusted, Some("1.2.3.4"), &trusted), peer_untrusted);
        assert_eq!(client_ip(proxy, Some("1.2.3.4"), &trusted), "1.2.3.4".parse::<IpAddr>().unwrap());
        // Right to left: a spoofed leftmost entry is not believed.
        assert_eq!(
            client_ip(proxy, Some("6.6.6.6, 1.2.3.4, 10.0.0.7"), &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(proxy, Some("garbage"), &trusted), proxy);
        assert_eq!(client_ip(proxy, None, &trusted), proxy);
        // IPv4-mapped peers match IPv4 CIDRs.
        let mapped: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        assert_eq!(client_ip(mapped, Some("1.2.3.4"), &trusted), "1.2.3.4".parse::<IpAddr>().unwrap());
        assert_eq!(rate_key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(rate_key("2001:db8:1:2:ffff::1"), rate_key("2001:db8:1:2::9"));
        assert_eq!(rate_key("192.0.2.1"), "192.0.2.1");
    }
}
