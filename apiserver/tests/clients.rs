//! Real clients no one here wrote — kubectl and the official Python client — against
//! apiservers in front of a 3-member kvstore cluster; two apiservers share one store.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::{
    kubectl, kubectl_bin, kubectl_ok, python_with_kubernetes, start_store, Apiserver, Backend,
    Client,
};

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
"#;

fn pod_manifest(image: &str, env: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: solo
  labels: {{app: solo, env: {env}}}
spec:
  containers:
  - name: main
    image: {image}
  - name: side
    image: busybox:1.36
"#
    )
}

#[test]
fn kubectl_drives_the_apiserver() {
    let store = start_store(Backend::Kvstore, 3);
    let api = Apiserver::start(&store.endpoints_csv(), &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = api.kubeconfig(dir.path());

    let version = kubectl_ok(&kc, &["version", "-o", "json"], None);
    assert!(version.contains("v1.28.0-kvstore"), "{version}");

    // create (with client-side validation on), get -o json.
    kubectl_ok(&kc, &["create", "-f", "-"], Some(DEPLOYMENT));
    let dep: Value = serde_json::from_str(&kubectl_ok(
        &kc,
        &["get", "deployment", "web", "-o", "json"],
        None,
    ))
    .expect("json");
    assert_eq!(dep["spec"]["replicas"], 2);
    assert_eq!(dep["metadata"]["generation"], 1);
    let again = kubectl(&kc, &["create", "-f", "-"], Some(DEPLOYMENT));
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("AlreadyExists"),
        "{:?}",
        again
    );

    // apply: create, then a three-way strategic merge patch.
    kubectl_ok(
        &kc,
        &["apply", "-f", "-"],
        Some(&pod_manifest("nginx:1.25", "dev")),
    );
    kubectl_ok(
        &kc,
        &["apply", "-f", "-"],
        Some(&pod_manifest("nginx:1.26", "prod")),
    );
    let pod: Value = serde_json::from_str(&kubectl_ok(
        &kc,
        &["get", "pod", "solo", "-o", "json"],
        None,
    ))
    .expect("json");
    assert_eq!(pod["metadata"]["labels"]["env"], "prod");
    assert_eq!(pod["spec"]["containers"][0]["image"], "nginx:1.26");
    assert_eq!(
        pod["spec"]["containers"][1]["name"], "side",
        "merge by container name kept the sidecar"
    );
    assert!(
        pod["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );

    // get -o yaml / wide (server-side Table).
    let yaml = kubectl_ok(&kc, &["get", "pod", "solo", "-o", "yaml"], None);
    assert!(
        yaml.contains("resourceVersion:") && yaml.contains("image: nginx:1.26"),
        "{yaml}"
    );
    let wide = kubectl_ok(&kc, &["get", "pods", "-o", "wide"], None);
    let header = wide.lines().next().unwrap_or("");
    for col in ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"] {
        assert!(header.contains(col), "{wide}");
    }
    assert!(
        wide.contains("solo") && wide.contains("0/2") && wide.contains("Pending"),
        "{wide}"
    );

    // label, scale, patch (strategic and JSON), edit.
    kubectl_ok(&kc, &["label", "pod", "solo", "tier=front"], None);
    let selected = kubectl_ok(
        &kc,
        &["get", "pods", "-l", "tier=front", "-o", "name"],
        None,
    );
    assert_eq!(selected.trim(), "pod/solo");
    kubectl_ok(&kc, &["scale", "deployment", "web", "--replicas=5"], None);
    let replicas = kubectl_ok(
        &kc,
        &[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.replicas} {.metadata.generation}",
        ],
        None,
    );
    assert_eq!(replicas, "5 2");
    kubectl_ok(
        &kc,
        &[
            "patch",
            "deployment",
            "web",
            "-p",
            r#"{"spec":{"paused":true}}"#,
        ],
        None,
    );
    kubectl_ok(
        &kc,
        &[
            "patch",
            "deployment",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/replicas","value":3}]"#,
        ],
        None,
    );
    let out = Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["edit", "deployment", "web"])
        .env("KUBE_EDITOR", "sed -i s/replicas:\\ 3/replicas:\\ 4/")
        .output()
        .expect("kubectl edit");
    assert!(
        out.status.success(),
        "edit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dep: Value = serde_json::from_str(&kubectl_ok(
        &kc,
        &["get", "deployment", "web", "-o", "json"],
        None,
    ))
    .expect("json");
    assert_eq!(
        (
            dep["spec"]["replicas"].as_i64(),
            dep["spec"]["paused"].as_bool()
        ),
        (Some(4), Some(true))
    );

    // get -w sees a pod created by someone else.
    let mut watcher = Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["get", "pods", "-w", "--no-headers"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let stdout = watcher.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    assert!(rx
        .recv_timeout(Duration::from_secs(15))
        .expect("initial list")
        .starts_with("solo"));
    let c = Client::new(&api.url);
    c.post("/api/v1/namespaces/default/pods", &json!({"metadata": {"name": "watched"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}));
    let line = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("a watch line");
    assert!(line.starts_with("watched"), "{line}");
    let _ = watcher.kill();
    let _ = watcher.wait();

    // delete and NotFound.
    kubectl_ok(&kc, &["delete", "pod", "solo"], None);
    let missing = kubectl(&kc, &["get", "pod", "solo"], None);
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("pods \"solo\" not found"),
        "{missing:?}"
    );
    kubectl_ok(&kc, &["delete", "deployment", "web"], None);

    // Namespaces: create, use, delete (contents go with it).
    kubectl_ok(&kc, &["create", "namespace", "team"], None);
    kubectl_ok(
        &kc,
        &[
            "-n",
            "team",
            "create",
            "configmap",
            "settings",
            "--from-literal=a=1",
        ],
        None,
    );
    let cms = kubectl_ok(&kc, &["-n", "team", "get", "configmaps"], None);
    assert!(cms.contains("settings"), "{cms}");
    kubectl_ok(&kc, &["delete", "namespace", "team"], None);
    let gone = kubectl(&kc, &["get", "namespace", "team"], None);
    assert!(!gone.status.success(), "namespace still there");
}

#[test]
fn python_client_and_two_apiservers_share_one_store() {
    let mut store = start_store(Backend::Kvstore, 3);
    let a = Apiserver::start(&store.endpoints_csv(), &[]);
    let b = Apiserver::start(&store.endpoints_csv(), &[]);

    let py = python_with_kubernetes();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_check.py");
    let out = Command::new(&py)
        .arg(script)
        .arg(&a.url)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python client failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // What one apiserver writes, the other serves and streams.
    let ca = Client::new(&a.url);
    let cb = Client::new(&b.url);
    let listed = cb.get("/api/v1/namespaces/py/configmaps");
    let rv = listed.body["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    assert_eq!(
        cb.get("/api/v1/namespaces/py/configmaps/conf").body["data"]["k"],
        "v3"
    );
    let wa = ca.watch(&format!(
        "/api/v1/namespaces/py/configmaps?watch=true&resourceVersion={rv}"
    ));
    let wb = cb.watch(&format!(
        "/api/v1/namespaces/py/configmaps?watch=true&resourceVersion={rv}"
    ));
    for i in 0..3 {
        let r = ca.post(
            "/api/v1/namespaces/py/configmaps",
            &json!({"metadata": {"name": format!("shared-{i}")}}),
        );
        assert_eq!(r.code, 201);
    }
    for i in 0..3 {
        let ea = wa.next_event();
        let eb = wb.next_event();
        assert_eq!(ea["object"]["metadata"]["name"], format!("shared-{i}"));
        assert_eq!(
            ea["object"]["metadata"]["resourceVersion"],
            eb["object"]["metadata"]["resourceVersion"]
        );
    }

    // One store member down: both apiservers keep serving (failover to the others).
    store.stop(0);
    for (i, c) in [&ca, &cb].into_iter().enumerate() {
        let r = support::eventually(Duration::from_secs(20), "a write after failover", || {
            let r = c.post(
                "/api/v1/namespaces/py/configmaps",
                &json!({"metadata": {"name": format!("after-{i}")}}),
            );
            (r.code == 201).then_some(r)
        });
        assert_eq!(r.body["metadata"]["name"], format!("after-{i}"));
    }
    assert_eq!(cb.get("/api/v1/namespaces/py/configmaps/after-0").code, 200);
}
