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
    let expected = format!("{}:6:1: unknown field `upstrem`", file.path().display());
    assert!(stderr.starts_with(&expected), "{stderr}");
    assert!(
        stderr.contains("`upstream`"),
        "the valid keys are listed: {stderr}"
    );
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
