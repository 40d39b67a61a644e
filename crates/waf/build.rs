//! Finds libmodsecurity 3 with pkg-config. Without it the crate still builds (so that
//! `cargo test --workspace` works on a machine without the library), but its rule sets
//! refuse to load and say why; the `require-libmodsecurity` feature makes that a build
//! error instead.

fn main() {
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo::rustc-check-cfg=cfg(towergate_waf_no_lib)");
    match pkg_config::Config::new()
        .range_version("3.0.0".."4")
        .probe("modsecurity")
    {
        Ok(_) => {}
        Err(e) if std::env::var_os("CARGO_FEATURE_REQUIRE_LIBMODSECURITY").is_some() => {
            panic!(
                "libmodsecurity 3 is needed for the WAF: install libmodsecurity-dev (Debian, Ubuntu) \
                 or libmodsecurity-devel (Fedora) and pkg-config.\npkg-config said: {e}"
            );
        }
        Err(_) => {
            println!(
                "cargo::warning=pkg-config found no libmodsecurity 3; towergate-waf is built without it and will refuse to load rules (Debian: apt install libmodsecurity-dev)"
            );
            println!("cargo::rustc-cfg=towergate_waf_no_lib");
        }
    }
}
