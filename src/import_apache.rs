//! `towergate import-apache`: an Apache httpd.conf of the reverse-proxy kind, as towergate
//! TOML.
//!
//! Translates the directives that have a home in towergate (ProxyPass and
//! `<Proxy balancer://>` pools, ProxyPreserveHost, Timeout, Limit*, the `RewriteRule
//! PATTERN - [F]` filter, mod_evasive, Order/Allow/Deny and `Require ip`, mod_expires,
//! ErrorDocument, LogFormat/CustomLog, ErrorLog/LogLevel, Listen, ServerName,
//! SecServerSignature) and lists, with line numbers, every directive it could not
//! translate and why. `<IfModule>` containers are read through.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The translation: TOML text, and what was left behind.
#[derive(Debug, Default)]
pub struct Import {
    /// The config, ready for `towergate check`.
    pub toml: String,
    /// `(line, directive, why)` for everything not translated.
    pub untranslated: Vec<(usize, String, String)>,
}

/// One directive: its line, name and arguments (quotes removed).
#[derive(Debug, Clone)]
struct Directive {
    line: usize,
    name: String,
    args: Vec<String>,
    /// The `<Proxy ...>` container it sits in, if any.
    proxy: Option<String>,
}

#[derive(Default)]
struct Pool {
    members: Vec<String>,
}

#[derive(Default)]
struct Acl {
    order: Option<String>,
    allow: Vec<String>,
    deny: Vec<String>,
}

/// Translates `text` (an httpd.conf).
pub fn import(text: &str) -> Import {
    let mut out = Import::default();
    let directives = parse(text, &mut out.untranslated);

    let mut listen = Vec::new();
    let mut names = Vec::new();
    let mut server = Vec::new();
    let mut routes = Vec::new();
    let mut reverse = Vec::new();
    let mut pools: BTreeMap<String, Pool> = BTreeMap::new();
    let mut limits = Vec::new();
    let mut charfilter = Vec::new();
    let mut acl = Acl::default();
    let mut evasive = Vec::new();
    let mut expires = Vec::new();
    let mut expires_by_type = Vec::new();
    let mut error_pages: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    let mut formats: BTreeMap<String, String> = [
        ("common", "%h %l %u %t \"%r\" %>s %b"),
        (
            "combined",
            "%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-Agent}i\"",
        ),
        (
            "combinedio",
            "%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-Agent}i\" %I %O",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut access_log = Vec::new();
    let mut error_log = Vec::new();

    let mut skip = |d: &Directive, why: &str| {
        out.untranslated.push((
            d.line,
            format!("{} {}", d.name, d.args.join(" ")).trim().to_owned(),
            why.to_owned(),
        ));
    };

    for d in &directives {
        let a = |i: usize| d.args.get(i).map(String::as_str).unwrap_or("");
        let name = d.name.to_ascii_lowercase();
        match name.as_str() {
            "listen" => {
                let addr = a(0);
                let addr = if addr.parse::<u16>().is_ok() {
                    format!("0.0.0.0:{addr}")
                } else {
                    addr.to_owned()
                };
                listen.push(format!("{addr:?}"));
            }
            "servername" | "serveralias" => {
                for n in &d.args {
                    let host = n.split("://").last().unwrap_or(n);
                    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
                    names.push(format!("{host:?}"));
                }
            }
            "timeout" => server.push(format!(
                "timeout = \"{}s\"                   # line {}: Timeout",
                a(0),
                d.line
            )),
            "proxypreservehost" => server.push(format!(
                "preserve_host = {}               # line {}: ProxyPreserveHost",
                a(0).eq_ignore_ascii_case("on"),
                d.line
            )),
            "proxyrequests" if a(0).eq_ignore_ascii_case("off") => {}
            "proxyrequests" => skip(
                d,
                "towergate is never a forward proxy (ProxyRequests Off is built in)",
            ),
            "proxypass" => {
                let (path, url) = (a(0), a(1));
                if url == "!" {
                    skip(d, "exclusions (`ProxyPass path !`) are not supported");
                } else if let Some(pool) = url.strip_prefix("balancer://") {
                    let pool = pool.trim_end_matches('/');
                    routes.push(format!("# line {}: ProxyPass {path} {url}\n[[route]]\nprefix = {path:?}\npool = {pool:?}\n", d.line));
                } else {
                    routes.push(format!("# line {}: ProxyPass {path} {url}\n[[route]]\nprefix = {path:?}\nupstream = {url:?}\n", d.line));
                }
                if d.args.len() > 2 {
                    skip(
                        d,
                        "ProxyPass key=value options are not translated; set the pool's or server's options instead",
                    );
                }
            }
            "proxypassreverse" => reverse.push((a(0).to_owned(), a(1).to_owned(), d.line)),
            "balancermember" => {
                let pool = match d
                    .proxy
                    .as_deref()
                    .and_then(|p| p.strip_prefix("balancer://"))
                {
                    Some(p) => p.trim_end_matches('/').to_owned(),
                    None => match d.args.first() {
                        Some(first) if first.starts_with("balancer://") => first
                            .trim_start_matches("balancer://")
                            .trim_end_matches('/')
                            .to_owned(),
                        _ => {
                            skip(
                                d,
                                "BalancerMember outside a <Proxy balancer://...> container",
                            );
                            continue;
                        }
                    },
                };
                let args: Vec<&String> = d
                    .args
                    .iter()
                    .filter(|x| !x.starts_with("balancer://"))
                    .collect();
                let Some(url) = args.first() else {
                    skip(d, "BalancerMember without a URL");
                    continue;
                };
                let mut member = format!("{{ url = {url:?}");
                for opt in &args[1..] {
                    match opt.split_once('=') {
                        Some(("route", v)) => write!(member, ", route = {v:?}").unwrap(),
                        Some(("redirect", v)) => write!(member, ", redirect = {v:?}").unwrap(),
                        Some(("loadfactor", v)) => write!(member, ", weight = {v}").unwrap(),
                        Some(("status", v)) => {
                            if v.contains('H') {
                                member.push_str(", standby = true");
                            }
                            if v.contains('D') {
                                member.push_str(", disabled = true");
                            }
                        }
                        _ => skip(d, &format!("member option `{opt}` is not translated")),
                    }
                }
                member.push_str(" }");
                pools.entry(pool).or_default().members.push(member);
            }
            "limitrequestbody" => {
                limits.push(format!("body = {}                 # line {}", a(0), d.line))
            }
            "limitrequestfields" => limits.push(format!(
                "fields = {}                   # line {}",
                a(0),
                d.line
            )),
            "limitrequestfieldsize" => limits.push(format!(
                "field_size = {}             # line {}",
                a(0),
                d.line
            )),
            "limitrequestline" => limits.push(format!(
                "line = {}                   # line {}",
                a(0),
                d.line
            )),
            "rewriteengine" => {}
            "rewriterule" => {
                let flags = a(2).to_ascii_uppercase();
                if a(1) == "-" && (flags == "[F]" || flags == "[F,L]" || flags == "[L,F]") {
                    charfilter.push(format!(
                        "# line {}: RewriteRule {} - {}\n[[charfilter.rule]]\ndeny = '{}'\n",
                        d.line,
                        a(0),
                        a(2),
                        a(0)
                    ));
                } else {
                    skip(
                        d,
                        "only the `RewriteRule PATTERN - [F]` filter form is translated",
                    );
                }
            }
            "rewritelog" | "rewriteloglevel" => skip(
                d,
                "mod_rewrite logging: use RUST_LOG=towergate_charfilter=debug",
            ),
            "order" if d.proxy.as_deref().is_none_or(|p| p == "*") => {
                acl.order = Some(d.args.join("").to_ascii_lowercase())
            }
            "allow" if a(0).eq_ignore_ascii_case("from") => {
                acl.allow.extend(d.args[1..].iter().cloned())
            }
            "deny" if a(0).eq_ignore_ascii_case("from") => {
                acl.deny.extend(d.args[1..].iter().cloned())
            }
            "require" if a(0).eq_ignore_ascii_case("ip") => {
                acl.allow.extend(d.args[1..].iter().cloned())
            }
            "require"
                if a(0).eq_ignore_ascii_case("all") && a(1).eq_ignore_ascii_case("granted") =>
            {
                acl.allow.push("all".into())
            }
            "doswhitelist" => evasive.push(format!(
                "whitelist = [{}]   # line {}",
                d.args
                    .iter()
                    .map(|w| format!("{w:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                d.line
            )),
            "doslogdir" => evasive.push(format!(
                "# log_dir = {:?}   # line {}: create the directory, then uncomment",
                a(0),
                d.line
            )),
            "doshashtablesize" => {
                evasive.push(format!("max_tracked = {}   # line {}", a(0), d.line))
            }
            "dospagecount" => evasive.push(format!("page_count = {}   # line {}", a(0), d.line)),
            "dospageinterval" => {
                evasive.push(format!("page_interval = \"{}s\"   # line {}", a(0), d.line))
            }
            "dossitecount" => evasive.push(format!("site_count = {}   # line {}", a(0), d.line)),
            "dossiteinterval" => {
                evasive.push(format!("site_interval = \"{}s\"   # line {}", a(0), d.line))
            }
            "dosblockingperiod" => evasive.push(format!(
                "blocking_period = \"{}s\"   # line {}",
                a(0),
                d.line
            )),
            "secserversignature" => server.push(format!(
                "signature = {:?}   # line {}: SecServerSignature",
                a(0),
                d.line
            )),
            "expiresactive" => {}
            "expiresdefault" => expires.push(format!("default = {:?}   # line {}", a(0), d.line)),
            "expiresbytype" => {
                expires_by_type.push(format!("{:?} = {:?}   # line {}", a(0), a(1), d.line))
            }
            "errordocument" => match a(0).parse::<u16>() {
                Ok(code) => error_pages.entry(a(1).to_owned()).or_default().push(code),
                Err(_) => skip(d, "ErrorDocument needs a status code"),
            },
            "logformat" => {
                if let Some(nick) = d.args.get(1) {
                    formats.insert(nick.clone(), a(0).to_owned());
                }
            }
            "customlog" => {
                let format = formats
                    .get(a(1))
                    .cloned()
                    .unwrap_or_else(|| a(1).to_owned());
                let format = if ["common", "combined", "combinedio"].contains(&a(1)) {
                    a(1).to_owned()
                } else {
                    format
                };
                access_log = vec![
                    format!("# line {}: CustomLog {} {}", d.line, a(0), a(1)),
                    format!("path = {:?}", a(0)),
                    format!("format = {format:?}"),
                ];
            }
            "errorlog" => error_log.push(format!("path = {:?}   # line {}", a(0), d.line)),
            "loglevel" => error_log.push(format!("level = {:?}   # line {}", a(0), d.line)),
            "serverroot" | "loadmodule" | "loadfile" | "user" | "group" | "enablemmap"
            | "enablesendfile" | "serveradmin" | "pidfile" => skip(
                d,
                "not needed: towergate is one binary with its modules built in",
            ),
            "include" => skip(
                d,
                "ModSecurity rules: see the [waf] section (cargo feature `waf`)",
            ),
            "secauditlog" | "secruleengine" | "secrequestbodyaccess" => skip(
                d,
                "ModSecurity setting: see the [waf] section (cargo feature `waf`)",
            ),
            _ => skip(d, "no towergate equivalent"),
        }
    }

    let mut t = String::from(
        "# Imported from an Apache httpd.conf by `towergate import-apache`.\n\n[server]\n",
    );
    if listen.is_empty() {
        listen.push("\"0.0.0.0:80\"".into());
    }
    writeln!(t, "listen = [{}]", listen.join(", ")).unwrap();
    if !names.is_empty() {
        writeln!(t, "names = [{}]", names.join(", ")).unwrap();
    }
    for s in &server {
        writeln!(t, "{s}").unwrap();
    }
    let sections: [(&str, &Vec<String>); 1] = [("limits", &limits)];
    for (name, lines) in sections {
        if !lines.is_empty() {
            writeln!(t, "\n[{name}]\n{}", lines.join("\n")).unwrap();
        }
    }
    for r in &routes {
        writeln!(t, "\n{r}").unwrap();
    }
    for (name, pool) in &pools {
        writeln!(
            t,
            "\n[pool.{name}]\nmembers = [\n  {},\n]",
            pool.members.join(",\n  ")
        )
        .unwrap();
    }
    for c in &charfilter {
        writeln!(t, "\n{c}").unwrap();
    }
    if acl.order.is_some() || !acl.allow.is_empty() || !acl.deny.is_empty() {
        writeln!(t, "\n[acl]").unwrap();
        if let Some(order) = &acl.order {
            writeln!(t, "order = {order:?}").unwrap();
        }
        let list = |v: &Vec<String>| {
            v.iter()
                .map(|x| format!("{x:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !acl.allow.is_empty() {
            writeln!(t, "allow = [{}]", list(&acl.allow)).unwrap();
        }
        if !acl.deny.is_empty() {
            writeln!(t, "deny = [{}]", list(&acl.deny)).unwrap();
        }
    }
    if !evasive.is_empty() {
        writeln!(t, "\n[evasive]\n{}", evasive.join("\n")).unwrap();
    }
    if !expires.is_empty() || !expires_by_type.is_empty() {
        writeln!(t, "\n[expires]\n{}", expires.join("\n")).unwrap();
        if !expires_by_type.is_empty() {
            writeln!(t, "[expires.by_type]\n{}", expires_by_type.join("\n")).unwrap();
        }
    }
    if !error_pages.is_empty() {
        writeln!(t, "\n[error_pages]").unwrap();
        for (doc, codes) in &error_pages {
            let value = if doc.starts_with("http://") || doc.starts_with("https://") {
                format!("{{ url = {doc:?} }}")
            } else if doc.starts_with('/') {
                format!("{{ path = {doc:?} }}")
            } else {
                format!("{{ text = {doc:?} }}")
            };
            for code in codes {
                writeln!(t, "{code} = {value}").unwrap();
            }
        }
    }
    if !access_log.is_empty() {
        writeln!(t, "\n[access_log]\n{}", access_log.join("\n")).unwrap();
    }
    if !error_log.is_empty() {
        writeln!(t, "\n[error_log]\n{}", error_log.join("\n")).unwrap();
    }
    for (path, url, line) in &reverse {
        let covered = routes
            .iter()
            .any(|r| r.contains(&format!("prefix = {path:?}")));
        if !covered {
            out.untranslated.push((*line, format!("ProxyPassReverse {path} {url}"), "no ProxyPass for this path; towergate rewrites redirects for each route it forwards".into()));
        }
    }
    out.untranslated.sort();
    if !out.untranslated.is_empty() {
        t.push_str("\n# Not translated:\n");
        for (line, what, why) in &out.untranslated {
            writeln!(t, "#   line {line}: {what}  ({why})").unwrap();
        }
    }
    out.toml = t;
    out
}

/// Splits the file into directives, reading through containers; `<Proxy X>` is recorded
/// on the directives inside it.
fn parse(text: &str, untranslated: &mut Vec<(usize, String, String)>) -> Vec<Directive> {
    let mut out = Vec::new();
    let mut proxy: Vec<Option<String>> = Vec::new();
    let mut pending = String::new();
    let mut first_line = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if pending.is_empty() {
            first_line = i + 1;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let logical = std::mem::take(&mut pending);
        let logical = logical.trim();
        if logical.is_empty() || logical.starts_with('#') {
            continue;
        }
        if let Some(close) = logical.strip_prefix("</") {
            if close.to_ascii_lowercase().starts_with("proxy") {
                proxy.pop();
            }
            continue;
        }
        if let Some(open) = logical.strip_prefix('<') {
            let open = open.trim_end_matches('>');
            let words = split_args(open);
            let kind = words
                .first()
                .map(|w| w.to_ascii_lowercase())
                .unwrap_or_default();
            match kind.as_str() {
                "ifmodule" | "ifdefine" | "ifversion" => {}
                "proxy" => proxy.push(words.get(1).cloned()),
                _ => untranslated.push((
                    first_line,
                    format!("<{open}>"),
                    "container not translated; its directives are read as if outside it".into(),
                )),
            }
            continue;
        }
        let mut words = split_args(logical);
        if words.is_empty() {
            continue;
        }
        let name = words.remove(0);
        out.push(Directive {
            line: first_line,
            name,
            args: words,
            proxy: proxy.last().cloned().flatten(),
        });
    }
    out
}

/// Apache's argument splitting: whitespace separates, double quotes group, `\"` escapes.
fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted && matches!(chars.peek(), Some('"') | Some('\\')) => {
                cur.push(chars.next().unwrap());
            }
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_apache() {
        assert_eq!(
            split_args(r#"LogFormat "%h \"%r\"" common"#),
            ["LogFormat", "%h \"%r\"", "common"]
        );
        assert_eq!(
            split_args("ErrorDocument 404 \"\""),
            ["ErrorDocument", "404", ""]
        );
    }

    #[test]
    fn members_land_in_their_pool() {
        let conf = "ProxyPass /p balancer://ps/\n<Proxy balancer://ps>\n BalancerMember http://a/p route=a redirect=b\n BalancerMember http://b/p route=b status=+H\n</Proxy>\nFrobnicate on\n";
        let imported = import(conf);
        assert!(imported.toml.contains("[pool.ps]"), "{}", imported.toml);
        assert!(
            imported
                .toml
                .contains(r#"{ url = "http://b/p", route = "b", standby = true }"#),
            "{}",
            imported.toml
        );
        assert_eq!(
            imported.untranslated,
            [(
                6,
                "Frobnicate on".to_owned(),
                "no towergate equivalent".to_owned()
            )]
        );
    }
}
