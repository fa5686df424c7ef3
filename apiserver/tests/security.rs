//! TLS with generated certificates, client-certificate and token authentication, RBAC from
//! stored objects, the audit log, and the request size and in-flight limits.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{json, Value};
use support::{kubectl, kubectl_ok, start_store, Apiserver, Backend, Client};

#[test]
fn tls_client_certs_tokens_rbac_and_audit() {
    let store = start_store(Backend::Kvstore, 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("pki");
    apiserver::tls::generate(
        &certs,
        &["127.0.0.1".into(), "localhost".into()],
        "https://127.0.0.1:1",
    )
    .expect("generate certs");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        "alice-token,alice,1001,\"dev\"\nbob-token,bob,1002\n",
    )
    .expect("tokens");
    let audit = dir.path().join("audit.log");
    let p = |f: &str| certs.join(f).display().to_string();
    let (cert, key, ca, tok, aud) = (
        p("apiserver.crt"),
        p("apiserver.key"),
        p("ca.crt"),
        tokens.display().to_string(),
        audit.display().to_string(),
    );
    let api = Apiserver::start_tls(
        &store.endpoints_csv(),
        &[
            "--tls-cert-file",
            &cert,
            "--tls-private-key-file",
            &key,
            "--client-ca-file",
            &ca,
            "--token-auth-file",
            &tok,
            "--authorization-mode",
            "RBAC",
            "--audit-log-path",
            &aud,
        ],
    );

    // kubectl with the generated admin kubeconfig: client certificate, O=system:masters.
    let admin = std::fs::read_to_string(certs.join("admin.kubeconfig"))
        .expect("kubeconfig")
        .replace("https://127.0.0.1:1", &api.url);
    let kc = dir.path().join("admin.kubeconfig");
    std::fs::write(&kc, admin).expect("write kubeconfig");
    kubectl_ok(&kc, &["create", "namespace", "dev"], None);
    kubectl_ok(
        &kc,
        &[
            "-n",
            "dev",
            "create",
            "configmap",
            "c1",
            "--from-literal=a=1",
        ],
        None,
    );

    // Tokens over HTTPS: unknown is 401; known but unbound is 403 in Kubernetes' words.
    let ca_pem = std::fs::read(certs.join("ca.crt")).expect("ca");
    let http = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).expect("ca cert"))
        .build()
        .expect("client");
    let call =
        |token: &str, method: reqwest::Method, path: &str, body: Option<Value>| -> (u16, Value) {
            let mut req = http
                .request(method, format!("{}{path}", api.url))
                .bearer_auth(token);
            if let Some(b) = body {
                req = req
                    .header("Content-Type", "application/json")
                    .body(b.to_string());
            }
            let resp = req.send().expect("request");
            let code = resp.status().as_u16();
            (code, resp.json().unwrap_or(Value::Null))
        };
    let list = "/api/v1/namespaces/dev/configmaps";
    let (code, body) = call("wrong", reqwest::Method::GET, list, None);
    assert_eq!((code, body["reason"].as_str()), (401, Some("Unauthorized")));
    let (code, body) = call("alice-token", reqwest::Method::GET, list, None);
    assert_eq!((code, body["reason"].as_str()), (403, Some("Forbidden")));
    assert_eq!(
        body["message"],
        "configmaps is forbidden: User \"alice\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"dev\""
    );
    // No credentials at all: anonymous, also forbidden.
    let anon = http
        .get(format!("{}{list}", api.url))
        .send()
        .expect("anonymous");
    assert_eq!(anon.status().as_u16(), 403);

    // A Role and a RoleBinding to group "dev", created by the admin, let alice read only.
    let role = r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"reader","namespace":"dev"},
        "rules":[{"apiGroups":[""],"resources":["configmaps"],"verbs":["get","list","watch"]}]}"#;
    kubectl_ok(&kc, &["apply", "-f", "-"], Some(role));
    kubectl_ok(
        &kc,
        &[
            "-n",
            "dev",
            "create",
            "rolebinding",
            "readers",
            "--role=reader",
            "--group=dev",
        ],
        None,
    );
    let allowed = support::eventually(Duration::from_secs(5), "the binding to take effect", || {
        let (code, body) = call("alice-token", reqwest::Method::GET, list, None);
        (code == 200).then_some(body)
    });
    assert_eq!(allowed["items"][0]["metadata"]["name"], "c1");
    let (code, _) = call(
        "alice-token",
        reqwest::Method::POST,
        list,
        Some(json!({"metadata": {"name": "nope"}})),
    );
    assert_eq!(code, 403, "reader cannot create");
    let (code, _) = call(
        "alice-token",
        reqwest::Method::GET,
        "/api/v1/namespaces/default/configmaps",
        None,
    );
    assert_eq!(code, 403, "the Role is namespaced");
    let (code, _) = call("bob-token", reqwest::Method::GET, list, None);
    assert_eq!(code, 403, "bob is not in group dev");

    // The audit log has the writes: who, what, and the response code (denials too).
    let log = std::fs::read_to_string(&audit).expect("audit log");
    let events: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let created = events
        .iter()
        .find(|e| {
            e["objectRef"]["resource"] == "configmaps"
                && e["verb"] == "create"
                && e["user"]["username"] == "admin"
        })
        .expect("admin's create in the audit log");
    assert_eq!(created["responseStatus"]["code"], 201);
    assert!(events
        .iter()
        .any(|e| e["user"]["username"] == "alice" && e["responseStatus"]["code"] == 403));
    assert!(
        events.iter().all(|e| e["verb"] != "list"),
        "reads are not audited"
    );

    // kubectl reports the 403 too.
    let denied_kc = dir.path().join("bob.kubeconfig");
    let bob = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: bob\n  user:\n    token: bob-token\ncontexts:\n- name: k\n  context: {{cluster: k, user: bob, namespace: dev}}\ncurrent-context: k\n",
        api.url, ca
    );
    std::fs::write(&denied_kc, bob).expect("bob kubeconfig");
    let out = kubectl(&denied_kc, &["get", "configmaps"], None);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Forbidden"),
        "{out:?}"
    );
}

#[test]
fn request_size_and_inflight_limits() {
    let store = start_store(Backend::Kvstore, 1);
    let api = Apiserver::start(
        &store.endpoints_csv(),
        &[
            "--max-requests-inflight",
            "1",
            "--max-request-bytes",
            "10000",
        ],
    );
    let c = Client::new(&api.url);
    let big = json!({"metadata": {"name": "big"}, "data": {"x": "y".repeat(20_000)}});
    let r = c.post("/api/v1/namespaces/default/configmaps", &big);
    assert_eq!(
        (r.code, r.body["reason"].as_str()),
        (413, Some("RequestEntityTooLarge"))
    );
    assert_eq!(c.get("/api/v1/namespaces/default/configmaps/big").code, 404);

    // A request whose body is still arriving holds the only permit: the next is 429. The slow
    // request is given a moment to take the permit first; if a probe took it instead (the slow
    // one then got the 429 itself), try again with a new slow request.
    let addr = api.url.trim_start_matches("http://").to_string();
    let head = "POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"metadata\":";
    let (mut slow, r) = support::eventually(Duration::from_secs(10), "a 429", || {
        let mut slow = std::net::TcpStream::connect(&addr).expect("connect");
        slow.set_nodelay(true).expect("nodelay");
        slow.write_all(head.as_bytes()).expect("send head");
        slow.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(300));
        let r = c.get("/api/v1/namespaces/default/configmaps");
        eprintln!("inflight probe: {} {}", r.code, r.raw);
        (r.code == 429).then_some((slow, r))
    });
    assert_eq!(r.body["reason"], "TooManyRequests");
    // Watches are long-running and do not count against the limit.
    let w = c.watch("/api/v1/namespaces/default/configmaps?watch=true");
    drop(w);
    // Finishing the slow request frees the permit.
    let rest = r#"{"name":"slow"}}"#;
    write!(slow, "{rest}{}", " ".repeat(40 - 12 - rest.len())).expect("send rest");
    let mut buf = [0u8; 12];
    slow.read_exact(&mut buf).expect("response");
    assert_eq!(&buf, b"HTTP/1.1 201");
    assert_eq!(
        c.get("/api/v1/namespaces/default/configmaps/slow").code,
        200
    );
}
