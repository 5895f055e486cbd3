//! Outbound HTTP: the one client every request Portcullis makes goes through (a
//! client's `jwks_uri` today; webhooks and upstream identity providers tomorrow).
//!
//! A URL supplied by an admin or a client must not turn Portcullis into a proxy
//! into its own network (server-side request forgery). So every connection is
//! judged by the address it will actually reach: host names are resolved by our own
//! resolver, which drops every address the policy refuses (loopback, private,
//! link-local, carrier-grade NAT, multicast, reserved, and cloud metadata
//! endpoints), and literal addresses are checked before the request and before
//! every redirect. DNS rebinding gains nothing: the address checked is the address
//! connected to. Proxies from the environment are ignored for the same reason.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Cloud metadata endpoints: never reachable, whatever the configuration says
/// (AWS, GCP and Azure `169.254.169.254`, AWS ECS `169.254.170.2`, Alibaba
/// `100.100.100.200`, AWS IPv6 `fd00:ec2::254`).
const METADATA: &[IpAddr] = &[
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];

/// Which addresses outbound requests may reach.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Private networks opened on purpose (`security.outbound_allowed_cidrs`).
    pub allowed: Vec<IpNet>,
    /// `security.danger_allow_private_targets`: every address but metadata ones.
    pub allow_private: bool,
}

impl Policy {
    /// The policy of the configuration.
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        Self {
            allowed: cfg.security.outbound_allowed_cidrs.clone(),
            allow_private: cfg.security.danger_allow_private_targets,
        }
    }

    /// Whether a connection to `ip` is allowed.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = embedded_v4(ip);
        if METADATA.iter().any(|m| embedded_v4(*m) == ip) {
            return false;
        }
        self.allow_private || is_public(ip) || self.allowed.iter().any(|net| net.contains(&ip))
    }

    /// Checks a URL before any connection: `http` or `https`, and a host that is
    /// either a name (judged by the resolver) or a permitted literal address.
    pub fn check_url(&self, url: &url::Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("scheme {} is not allowed for outbound requests", url.scheme()));
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err("the URL has no host".into()),
        };
        if self.permits(ip) { Ok(()) } else { Err(format!("{ip} is not an address outbound requests may reach")) }
    }
}

/// The IPv4 address an IPv6 address carries (mapped `::ffff:a.b.c.d`, NAT64
/// `64:ff9b::a.b.c.d`, 6to4 `2002:aabb:ccdd::`), or the address itself: each of these
/// reaches the IPv4 host, so the IPv4 host is what is judged.
fn embedded_v4(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    let from = |hi: u16, lo: u16| IpAddr::V4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    match s {
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => from(hi, lo),
        // Local-use NAT64 (RFC 8215), and the deprecated IPv4-compatible form `::a.b.c.d`.
        [0x64, 0xff9b, 1, _, _, _, hi, lo] => from(hi, lo),
        [0, 0, 0, 0, 0, 0, hi, lo] if (hi, lo) != (0, 0) && (hi, lo) != (0, 1) => from(hi, lo),
        [0x2002, hi, lo, ..] => from(hi, lo),
        _ => ip,
    }
}

/// Whether `ip` is a global unicast address (not loopback, private, link-local,
/// shared, documentation, benchmarking, multicast or reserved).
pub fn is_public(ip: IpAddr) -> bool {
    match embedded_v4(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b == 18 || b == 19)))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // Global unicast is 2000::/3; inside it, Teredo (2001::/32), ORCHID and
            // documentation (2001:db8::/32) reach nothing we should.
            (s[0] & 0xe000) == 0x2000
                && !(s[0] == 0x2001 && (s[1] == 0 || s[1] == 0xdb8 || (0x10..0x30).contains(&s[1])))
        }
    }
}

/// Resolves names and drops the addresses the policy refuses.
struct GuardedResolver(Arc<Policy>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found.into_iter().filter(|a| policy.permits(a.ip())).collect();
            if allowed.is_empty() {
                tracing::warn!(host = %host, "outbound request refused: the name resolves to no allowed address");
                return Err(format!("{host} resolves to no address outbound requests may reach").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The guarded HTTP client.
#[derive(Clone)]
pub struct Outbound {
    /// `None` when the client could not be built: every request is refused then,
    /// never sent through an unguarded client.
    client: Option<reqwest::Client>,
    /// The same, following no redirect: a POST carries data (an SMS code) that a
    /// redirect must not send elsewhere.
    poster: Option<reqwest::Client>,
    policy: Arc<Policy>,
}

impl Outbound {
    /// A client under `policy`: 5 s per request, at most 3 redirects, each judged.
    pub fn new(policy: Policy) -> Self {
        let policy = Arc::new(policy);
        let judge = policy.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 3 {
                return attempt.error("too many redirects");
            }
            match judge.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(why) => attempt.error(why),
            }
        });
        let build = |redirects| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .connect_timeout(Duration::from_secs(3))
                .redirect(redirects)
                .no_proxy()
                .dns_resolver(Arc::new(GuardedResolver(policy.clone())))
                .build()
                .inspect_err(|e| tracing::error!(error = %e, "the outbound HTTP client could not be built; outbound requests are refused"))
                .ok()
        };
        let client = build(redirects);
        let poster = build(reqwest::redirect::Policy::none());
        Self { client, poster, policy }
    }

    /// The client of the configuration.
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        Self::new(Policy::from_config(cfg))
    }

    /// `GET url`, refused before connecting when the policy forbids the target.
    pub async fn get(&self, url: &str) -> Result<reqwest::Response, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        self.policy.check_url(&parsed)?;
        let client = self.client.as_ref().ok_or("the outbound HTTP client is unavailable")?;
        client.get(parsed).send().await.map_err(|e| e.to_string())
    }

    /// `POST url` with what `build` adds (headers, body), refused before
    /// connecting when the policy forbids the target.
    pub async fn post(
        &self,
        url: &str,
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        self.policy.check_url(&parsed)?;
        let client = self.poster.as_ref().ok_or("the outbound HTTP client is unavailable")?;
        build(client.post(parsed)).send().await.map_err(|e| e.to_string())
    }

    /// [`Outbound::post`], whose errors never name the URL (it may hold a token).
    pub async fn post_quiet(
        &self,
        url: &str,
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, String> {
        let parsed = url::Url::parse(url).map_err(|_| "not a URL".to_owned())?;
        self.policy.check_url(&parsed)?;
        let client = self.poster.as_ref().ok_or("the outbound HTTP client is unavailable")?;
        build(client.post(parsed)).send().await.map_err(|e| e.without_url().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        let p = Policy::default();
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2001:db8::1",
            "ff02::1",
        ] {
            assert!(!p.permits(ip(bad)), "{bad} must be refused");
        }
        for good in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert!(p.permits(ip(good)), "{good} must be allowed");
        }
    }

    #[test]
    fn allowed_networks_open_private_ranges_but_never_metadata() {
        let p = Policy {
            allowed: vec!["10.0.0.0/8".parse().unwrap(), "169.254.0.0/16".parse().unwrap()],
            ..Default::default()
        };
        assert!(p.permits(ip("10.2.3.4")));
        assert!(p.permits(ip("169.254.1.1")));
        assert!(!p.permits(ip("169.254.169.254")));
        assert!(!p.permits(ip("192.168.1.1")));
        let danger = Policy { allow_private: true, ..Default::default() };
        assert!(danger.permits(ip("127.0.0.1")));
        assert!(!danger.permits(ip("169.254.169.254")), "metadata stays refused");
        assert!(!danger.permits(ip("fd00:ec2::254")));
        assert!(!danger.permits(ip("::a9fe:a9fe")), "IPv4-compatible metadata");
        assert!(!danger.permits(ip("64:ff9b:1::a9fe:a9fe")), "local-use NAT64 metadata");
        assert!(danger.permits(ip("::1")));
        assert!(!Policy::default().permits(ip("::7f00:1")), "IPv4-compatible loopback");
    }

    #[test]
    fn urls_are_judged_before_connecting() {
        let p = Policy::default();
        let check = |u: &str| p.check_url(&url::Url::parse(u).unwrap());
        assert!(check("https://169.254.169.254/latest/meta-data").is_err());
        assert!(check("http://[::1]:8080/jwks").is_err());
        assert!(check("http://127.0.0.1/jwks").is_err());
        assert!(check("file:///etc/passwd").is_err());
        assert!(check("https://login.example.com/jwks").is_ok(), "names are judged by the resolver");
    }
}
