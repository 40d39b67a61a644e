//! nginx as a competent operator runs it in front of the article's cluster: worker per core,
//! upstream keep-alive over HTTP/1.1, `backup` servers for the hot spares, a combined
//! access log written to a file.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use super::{NEWS_PREFIXES, POOLS, Topology, Tuning, p, secs};

/// The nginx config for a front on `127.0.0.1:port`, with its files under `dir`.
pub fn config(dir: &Path, port: u16, topo: &Topology, t: &Tuning, as_root: bool) -> String {
    let mut c = String::new();
    let user = if as_root {
        "user nobody nogroup;\n"
    } else {
        ""
    };
    let _ = write!(
        c,
        "# The article's cluster in nginx.
{user}worker_processes auto;
worker_rlimit_nofile 65536;
daemon off;
master_process on;
pid {pid};
error_log {err} warn;

events {{
    worker_connections 16384;
}}

http {{
    access_log {access} combined;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 100000;
    client_header_timeout {hto}s;
    server_tokens off;

    proxy_http_version 1.1;
    proxy_set_header Connection \"\";
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_connect_timeout 5s;
    proxy_read_timeout {to}s;
    proxy_send_timeout {to}s;
    proxy_buffer_size 16k;
    proxy_buffers 16 16k;
    proxy_next_upstream error timeout;

    upstream news_server {{
        server {news};
        keepalive 64;
        keepalive_requests 100000;
    }}
",
        pid = p(&dir.join("nginx.pid")),
        err = p(&dir.join("nginx_error.log")),
        access = p(&dir.join("nginx_access.log")),
        tmp = p(&dir.join("nginx-tmp")),
        hto = secs(t.header_timeout),
        to = secs(t.timeout),
        news = topo.addr("news_server"),
    );
    for pool in &POOLS {
        let _ = writeln!(c, "    upstream {} {{", pool.name);
        for (m, standby) in pool.members {
            let backup = if *standby { " backup" } else { "" };
            let _ = writeln!(
                c,
                "        server {} max_fails=1 fail_timeout={}s{backup};",
                topo.addr(m),
                secs(t.retry)
            );
        }
        c.push_str("        keepalive 64;\n        keepalive_requests 100000;\n    }\n");
    }
    let _ = write!(
        c,
        "
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        server_name your_hostname.com;
"
    );
    for prefix in NEWS_PREFIXES {
        let _ = writeln!(
            c,
            "        location {prefix} {{ proxy_pass http://news_server{prefix}; }}"
        );
    }
    for pool in &POOLS {
        let _ = writeln!(
            c,
            "        location {} {{ proxy_pass http://{}; }}",
            pool.prefix, pool.name
        );
    }
    c.push_str("    }\n}\n");
    c
}

/// The command that runs nginx in the foreground with `conf`.
pub fn command(bin: &Path, dir: &Path, conf: &Path) -> anyhow::Result<Command> {
    let tmp = dir.join("nginx-tmp");
    std::fs::create_dir_all(&tmp)?;
    // Workers run as nobody when started by root: they need their temp directory.
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    let mut cmd = Command::new(bin);
    cmd.arg("-p").arg(dir).arg("-c").arg(conf);
    Ok(cmd)
}
