//! Bad input never panics: each case prints one line naming what is wrong and exits with
//! code 2.
mod common;

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(common::BIN)
        .args(args)
        .env_remove("NODELENS_CONFIG")
        .output()
        .expect("run nodelens")
}

fn assert_usage_error(out: &Output, must_name: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(must_name),
        "should name {must_name}: {stderr}"
    );
}

#[test]
fn malformed_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodelens.yaml");
    std::fs::write(&path, "listen_address: [oops\n  - :\n").unwrap();
    let out = run(&["--config", path.to_str().unwrap()]);
    assert_usage_error(&out, path.to_str().unwrap());

    std::fs::write(&path, "listen_adress: 1.2.3.4:5\n").unwrap();
    let out = run(&["--config", path.to_str().unwrap()]);
    assert_usage_error(&out, "listen_adress");

    let out = run(&["--config", "/nonexistent/nodelens.toml"]);
    assert_usage_error(&out, "/nonexistent/nodelens.toml");
}

#[test]
fn unknown_flag_and_bad_values() {
    assert_usage_error(&run(&["--no-such-flag"]), "--no-such-flag");
    assert_usage_error(&run(&["--listen-address", "nowhere"]), "listen_address");
    assert_usage_error(&run(&["--collectors-disabled", "cpu,bogus"]), "bogus");
    assert_usage_error(&run(&["--log-format", "xml"]), "log_format");
}

#[test]
fn environment_variables_are_read_and_checked() {
    let out = Command::new(common::BIN)
        .env("NODELENS_LOG_LEVEL", "shouty")
        .output()
        .unwrap();
    assert_usage_error(&out, "log_level");
}

#[test]
fn unreadable_procfs_root() {
    let out = run(&["--procfs", "/nonexistent/proc"]);
    assert_usage_error(&out, "procfs");
}

#[test]
fn port_already_in_use() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = run(&["--listen-address", &addr, "--collectors-disabled", "sched"]);
    assert_usage_error(&out, &addr);
}

#[test]
fn help_and_version_succeed() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen-address",
        "--procfs",
        "--sysfs",
        "--collectors-enabled",
        "--log-format",
        "NODELENS_LOG_LEVEL",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    assert_eq!(run(&["--version"]).status.code(), Some(0));
}
