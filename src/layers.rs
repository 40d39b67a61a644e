//! `towergate layers`: the compiled-in layers in request order (like `apachectl -M`), and
//! for a config, which of them are on.

use std::fmt::Write as _;

use crate::config::Config;

/// One layer of the stack: its crate, the Apache directives it replaces, and whether a
/// config turns it on.
struct Layer {
    name: &'static str,
    krate: &'static str,
    replaces: &'static str,
    on: fn(&Config) -> bool,
}

/// Every crate shares the workspace's version.
const VERSION: &str = env!("CARGO_PKG_VERSION");

const STACK: &[Layer] = &[
    Layer {
        // Not a tower layer: the listeners read the header before HTTP starts.
        name: "proxy-protocol",
        krate: "towergate-proxy-protocol",
        replaces: "RemoteIPProxyProtocol (2.4.31+; HAProxy accept-proxy)",
        on: |c| c.server.proxy_protocol || c.tls.as_ref().is_some_and(|t| t.proxy_protocol),
    },
    Layer {
        name: "access-log",
        krate: "towergate-access-log",
        replaces: "LogFormat, CustomLog",
        on: |c| c.access_log.is_some(),
    },
    Layer {
        name: "error-pages",
        krate: "towergate-error-pages",
        replaces: "ErrorDocument, ProxyErrorOverride",
        on: |c| c.error_pages.is_some(),
    },
    Layer {
        name: "signature",
        krate: "tower-http",
        replaces: "SecServerSignature",
        on: |_| true,
    },
    Layer {
        name: "request-limits",
        krate: "towergate-request-limits",
        replaces: "LimitRequestBody, LimitRequestFields, LimitRequestFieldSize, LimitRequestLine",
        on: |_| true,
    },
    Layer {
        name: "canonical-request",
        krate: "towergate-proxy",
        replaces: "ProxyRequests Off, AllowEncodedSlashes Off",
        on: |_| true,
    },
    Layer {
        name: "client-addr",
        krate: "towergate-client-addr",
        replaces: "mod_remoteip (RemoteIPTrustedProxy)",
        on: |c| !c.client_addr.trusted_proxies.is_empty(),
    },
    Layer {
        name: "acl",
        krate: "towergate-acl",
        replaces: "Order, Allow, Deny, Require ip",
        on: |c| c.acl != towergate_acl::AclConfig::default(),
    },
    Layer {
        name: "evasive",
        krate: "towergate-evasive",
        replaces: "mod_evasive (DOS*)",
        on: |c| c.evasive.is_some(),
    },
    Layer {
        name: "charfilter",
        krate: "towergate-charfilter",
        replaces: "RewriteRule PATTERN - [F]",
        on: |c| !c.charfilter.rules.is_empty(),
    },
    Layer {
        name: "expires",
        krate: "towergate-expires",
        replaces: "ExpiresActive, ExpiresDefault, ExpiresByType",
        on: |c| c.expires.is_some(),
    },
    Layer {
        name: "balancer",
        krate: "towergate-balancer",
        replaces: "mod_proxy_balancer, BalancerMember",
        on: |c| !c.pools.is_empty(),
    },
    Layer {
        name: "forward",
        krate: "towergate-proxy",
        replaces: "ProxyPass, ProxyPassReverse, ProxyPreserveHost",
        on: |_| true,
    },
];

/// The WAF, compiled in with the `waf` feature; it sits after the charfilter.
#[cfg(feature = "waf")]
const WAF: Option<Layer> = Some(Layer {
    name: "waf",
    krate: "towergate-waf",
    replaces: "mod_security (Include conf/modsecurity/*.conf)",
    on: |c| c.waf.is_some(),
});
#[cfg(not(feature = "waf"))]
const WAF: Option<Layer> = None;

/// The listing, with on/off per layer when a config is given.
pub fn describe(config: Option<&Config>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "towergate {VERSION}: layers in request order, outermost first"
    );
    let after = STACK
        .iter()
        .position(|l| l.name == "charfilter")
        .map_or(0, |i| i + 1);
    let layers = STACK[..after]
        .iter()
        .chain(WAF.as_ref())
        .chain(&STACK[after..]);
    for (i, l) in layers.enumerate() {
        let state = match config {
            Some(c) if (l.on)(c) => "on ",
            Some(_) => "off",
            None => "",
        };
        let _ = writeln!(
            out,
            "{:>2}. {state} {:<18} {:<26} {VERSION:<7} replaces {}",
            i + 1,
            l.name,
            l.krate,
            l.replaces
        );
    }
    out
}
