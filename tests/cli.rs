//! The `towergate` command line: `check` reports config errors with their position.

use std::io::Write;
use std::process::Command;

fn check(text: &str) -> (bool, String, String, tempfile::NamedTempFile) {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_towergate"))
        .args(["check", "-c"])
        .arg(file.path())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        file,
    )
}

#[test]
fn check_names_file_line_column_and_the_typoed_key() {
    let (ok, _, stderr, file) = check(
        "[server]\nlisten = [\"127.0.0.1:8080\"]\n\n[[route]]\nprefix = \"/\"\nupstrem = \"http://a.lan\"\n",
    );
    assert!(!ok);
    let expected = format!(
        "{}:6:1: route[0].upstrem: unknown field `upstrem`",
        file.path().display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
    assert!(
        stderr.contains("`upstream`"),
        "the valid keys are listed: {stderr}"
    );
}

#[test]
fn check_validates_the_proxy_protocol_keys() {
    let head = "[server]\nlisten = [\"127.0.0.1:8080\"]\nproxy_protocol = true\n";
    let route = "[[route]]\nprefix = \"/\"\nupstream = \"http://a.lan\"\n";
    let (ok, _, stderr, file) = check(&format!(
        "{head}proxy_protocol_from = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n{route}"
    ));
    assert!(!ok);
    let expected = format!(
        "{}:4:23: server.proxy_protocol_from: `10.0.0.0/33` is not an IP address or CIDR network",
        file.path().display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
    let (ok, _, stderr, _) = check(&format!("{head}{route}"));
    assert!(!ok);
    assert!(
        stderr.contains("server.proxy_protocol_from: name the balancers"),
        "{stderr}"
    );
    let (ok, stdout, stderr, _) = check(&format!(
        "{head}proxy_protocol_from = [\"10.0.0.0/8\", \"2001:db8::1\"]\n{route}"
    ));
    assert!(ok, "{stdout}{stderr}");
}

#[test]
fn check_accepts_the_seed_cluster() {
    let out = Command::new(env!("CARGO_BIN_EXE_towergate"))
        .args([
            "check",
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/seed-cluster.toml"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.trim_end().ends_with("seed-cluster.toml: OK"),
        "{stdout}"
    );
}

#[test]
fn check_reports_a_missing_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_towergate"))
        .args(["check", "-c", "/nonexistent/towergate.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("/nonexistent/towergate.toml: cannot read the file")
    );
}

#[test]
fn the_articles_httpd_conf_imports_into_a_config_that_checks_and_matches_the_seed_cluster() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/article-httpd.conf"
    );
    let out_file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_towergate"))
        .args(["import-apache", fixture, "-o"])
        .arg(out_file.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    for untranslated in [
        ":13: ServerRoot",
        ":35: LoadModule evasive20_module",
        ":159: Include conf/modsecurity/*.conf",
        ":178: EnableMMAP on",
    ] {
        assert!(
            stderr.contains(untranslated),
            "{untranslated} not listed: {stderr}"
        );
    }
    let (ok, stdout, stderr, _) = check(&std::fs::read_to_string(out_file.path()).unwrap());
    assert!(ok, "{stdout}{stderr}");

    // Same routes, pools and members as the hand-written seed cluster.
    let imported = towergate::Config::load(out_file.path()).unwrap();
    let seed = towergate::Config::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/seed-cluster.toml"
    )))
    .unwrap();
    let routes = |c: &towergate::Config| {
        let mut r: Vec<String> = c
            .routes
            .iter()
            .map(|r| format!("{:?}", r.prefix.get_ref()))
            .collect();
        r.sort();
        r
    };
    assert_eq!(routes(&imported), routes(&seed));
    let pools = |c: &towergate::Config| c.pools.keys().cloned().collect::<Vec<_>>();
    assert_eq!(pools(&imported), pools(&seed));
    assert_eq!(imported.limits.0.body, seed.limits.0.body);
}

#[test]
fn layers_lists_the_stack_in_order_with_what_a_config_turns_on() {
    let out = Command::new(env!("CARGO_BIN_EXE_towergate"))
        .args([
            "layers",
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/seed-cluster.toml"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let position = |name: &str| {
        text.find(&format!(" {name} "))
            .unwrap_or_else(|| panic!("{name} missing: {text}"))
    };
    assert!(
        position("access-log") < position("request-limits")
            && position("acl") < position("evasive")
            && position("evasive") < position("charfilter")
    );
    assert!(text.lines().any(|l| l.contains(" on  evasive ")), "{text}");
    assert!(
        text.lines().any(|l| l.contains(" off client-addr ")),
        "{text}"
    );
}

#[test]
fn a_second_gateway_on_a_port_in_use_fails_to_start() {
    // The first gateway's workers share their port (SO_REUSEPORT); another process
    // asking for it must still be refused.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    drop(taken);
    let (mut first, _first_config) = towergate_process(port);
    let mut listening = false;
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            listening = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(listening, "the first gateway never listened");
    let (mut second, _second_config) = towergate_process(port);
    let mut status = None;
    for _ in 0..100 {
        status = second.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if status.is_none() {
        second.kill().unwrap();
        first.kill().unwrap();
        panic!("a second gateway started on a port in use");
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.unwrap().success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first gateway keeps running"
    );
    first.kill().unwrap();
    first.wait().unwrap();
}

/// `towergate run` on `127.0.0.1:port` with one route, its stderr captured; the config
/// file lives as long as the returned path.
fn towergate_process(port: u16) -> (std::process::Child, tempfile::TempPath) {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\n[[route]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let path = file.into_temp_path();
    let child = Command::new(env!("CARGO_BIN_EXE_towergate"))
        .args(["run", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    (child, path)
}
