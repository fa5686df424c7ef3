//! The `kvstore-apiserver` binary as an operator runs it: `--help`, clear errors for bad
//! flags, and a restart that loses nothing (all state is in the store).

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::{free_port, start_store, Backend, Client, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_kvstore-apiserver");

#[test]
fn help_names_kube_apiserver_flags() {
    let out = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--etcd-servers",
        "--bind-address",
        "--secure-port",
        "--tls-cert-file",
        "--tls-private-key-file",
        "--client-ca-file",
        "--token-auth-file",
        "--authorization-mode",
        "--audit-log-path",
        "--max-requests-inflight",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn bad_flags_fail_with_a_clear_message() {
    let out = Command::new(BIN)
        .args([
            "--secure-port",
            "0",
            "--insecure-port",
            "0",
            "--authorization-mode",
            "Magic",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown --authorization-mode \"Magic\""));
    let out = Command::new(BIN)
        .args(["--secure-port", "16443"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--secure-port needs --tls-cert-file"));
}

#[test]
fn restart_loses_nothing() {
    let store = start_store(Backend::Kvstore, 1);
    let port = free_port();
    let start = || {
        let child = Command::new(BIN)
            .args([
                "--etcd-servers",
                &store.endpoints_csv(),
                "--secure-port",
                "0",
                "--insecure-port",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kvstore-apiserver");
        let p = Proc(child);
        let c = Client::new(&format!("http://127.0.0.1:{port}"));
        support::eventually(Duration::from_secs(20), "the apiserver to answer", || {
            c.http
                .get(format!("{}/readyz", c.base))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        });
        (p, c)
    };
    let (first, c) = start();
    let created = support::eventually(Duration::from_secs(10), "the default namespace", || {
        let r = c.post(
            "/api/v1/namespaces/default/configmaps",
            &json!({"metadata": {"name": "kept"}, "data": {"k": "v"}}),
        );
        (r.code == 201).then_some(r)
    });
    drop(first);
    let (_second, c) = start();
    let got = c.get("/api/v1/namespaces/default/configmaps/kept");
    assert_eq!(got.code, 200);
    assert_eq!(got.body["metadata"]["uid"], created.body["metadata"]["uid"]);
    assert_eq!(
        got.body["metadata"]["resourceVersion"],
        created.body["metadata"]["resourceVersion"]
    );
}
