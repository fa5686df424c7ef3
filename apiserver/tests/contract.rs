//! The apiserver's REST and storage contract, run against a real kvstore member and against
//! real etcd 3.4 with the same assertions (the store is only reached through the etcd v3 API).

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{start_store, Apiserver, Backend, Client};

fn pod(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}})
}

fn rv(v: &Value) -> i64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion in {v}"))
}

fn crud_conflicts_and_errors(backend: Backend) {
    let store = start_store(backend, 1);
    let api = Apiserver::start(&store.endpoints_csv(), &[]);
    let c = Client::new(&api.url);
    let pods = "/api/v1/namespaces/default/pods";

    let created = c.post(pods, &pod("web", json!({"app": "web"})));
    assert_eq!(created.code, 201, "{:?}", created.body);
    let meta = &created.body["metadata"];
    assert_eq!(meta["generation"], 1);
    assert!(meta["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(meta["creationTimestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(created.body["status"]["phase"], "Pending");
    assert_eq!(created.body["spec"]["restartPolicy"], "Always", "defaulted");
    let rv1 = rv(&created.body);

    // resourceVersion is the store's mod_revision: a get returns the same one.
    let got = c.get(&format!("{pods}/web"));
    assert_eq!((got.code, rv(&got.body)), (200, rv1));

    let dup = c.post(pods, &pod("web", json!({})));
    assert_eq!(
        (dup.code, dup.body["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );
    assert_eq!(dup.body["kind"], "Status");
    assert_eq!(dup.body["message"], "pods \"web\" already exists");

    // An update carrying the current resourceVersion wins; a stale one is a Conflict.
    let mut relabeled = got.body.clone();
    relabeled["metadata"]["labels"]["tier"] = json!("front");
    let updated = c.put(&format!("{pods}/web"), &relabeled);
    assert_eq!(updated.code, 200, "{:?}", updated.body);
    assert!(rv(&updated.body) > rv1);
    assert_eq!(
        updated.body["metadata"]["generation"], 1,
        "labels are not spec"
    );
    let stale = c.put(&format!("{pods}/web"), &relabeled);
    assert_eq!(
        (stale.code, stale.body["reason"].as_str()),
        (409, Some("Conflict"))
    );

    // A spec change bumps generation.
    let mut respec = updated.body.clone();
    respec["spec"]["containers"][0]["image"] = json!("nginx:1.26");
    let respec = c.put(&format!("{pods}/web"), &respec);
    assert_eq!(respec.body["metadata"]["generation"], 2);

    // Bad input never reaches the store.
    let invalid = c.post(
        pods,
        &json!({"metadata": {"name": "bad"}, "spec": {"containers": [{"name": "c"}]}}),
    );
    assert_eq!(
        (invalid.code, invalid.body["reason"].as_str()),
        (422, Some("Invalid"))
    );
    assert_eq!(
        invalid.body["details"]["causes"][0]["field"],
        "spec.containers[0].image"
    );
    let garbage = c.request("POST", pods, Some(b"{not json"), "application/json");
    assert_eq!(
        (garbage.code, garbage.body["reason"].as_str()),
        (400, Some("BadRequest"))
    );
    assert_eq!(c.get(&format!("{pods}/bad")).code, 404);
    let proto = c.request(
        "POST",
        pods,
        Some(b"k8s\0"),
        "application/vnd.kubernetes.protobuf",
    );
    assert_eq!(
        (proto.code, proto.body["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
    let unknown = c.get("/api/v1/namespaces/default/widgets");
    assert_eq!(
        (unknown.code, unknown.body["reason"].as_str()),
        (404, Some("NotFound"))
    );
    let no_ns = c.post("/api/v1/namespaces/nowhere/pods", &pod("x", json!({})));
    assert_eq!(no_ns.code, 404);
    assert_eq!(no_ns.body["message"], "namespaces \"nowhere\" not found");
    let method = c.request("PUT", pods, Some(b"{}"), "application/json");
    assert_eq!(
        (method.code, method.body["reason"].as_str()),
        (405, Some("MethodNotAllowed"))
    );

    // dryRun=All validates and answers but stores nothing.
    let dry = c.post(&format!("{pods}?dryRun=All"), &pod("dry", json!({})));
    assert_eq!(dry.code, 201);
    assert_eq!(c.get(&format!("{pods}/dry")).code, 404);

    // Patches: merge, JSON and strategic.
    let merged = c.patch(
        &format!("{pods}/web"),
        &json!({"metadata": {"labels": {"tier": null}}}),
        "application/merge-patch+json",
    );
    assert_eq!(merged.code, 200, "{:?}", merged.body);
    assert!(merged.body["metadata"]["labels"].get("tier").is_none());
    let smp = c.patch(
        &format!("{pods}/web"),
        &json!({"spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}),
        "application/strategic-merge-patch+json",
    );
    assert_eq!(smp.body["spec"]["containers"][0]["image"], "nginx:1.27");
    assert_eq!(smp.body["spec"]["containers"][0]["name"], "c");
    let failed = c.patch(
        &format!("{pods}/web"),
        &json!([{"op": "test", "path": "/metadata/name", "value": "x"}]),
        "application/json-patch+json",
    );
    assert_eq!(failed.code, 422);
    let bad_ct = c.patch(&format!("{pods}/web"), &json!({}), "text/plain");
    assert_eq!(bad_ct.code, 415);

    // Status is written through /status only.
    let mut st = c.get(&format!("{pods}/web")).body;
    st["status"]["phase"] = json!("Running");
    let main = c.put(&format!("{pods}/web"), &st);
    assert_eq!(
        main.body["status"]["phase"], "Pending",
        "status ignored on the main resource"
    );
    let mut st = main.body.clone();
    st["status"]["phase"] = json!("Running");
    let status = c.put(&format!("{pods}/web/status"), &st);
    assert_eq!(status.body["status"]["phase"], "Running");

    // Binding assigns a node once; a scheduled pod's deletion is graceful.
    let bind = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web"}, "target": {"kind": "Node", "name": "n1"}});
    assert_eq!(c.post(&format!("{pods}/web/binding"), &bind).code, 201);
    assert_eq!(c.post(&format!("{pods}/web/binding"), &bind).code, 409);
    let graceful = c.delete(&format!("{pods}/web"));
    assert_eq!(graceful.code, 202, "{:?}", graceful.body);
    assert!(graceful.body["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        c.get(&format!("{pods}/web")).code,
        200,
        "still there during its grace period"
    );
    let now = c.delete(&format!("{pods}/web?gracePeriodSeconds=0"));
    assert_eq!(now.code, 200);
    let gone = c.get(&format!("{pods}/web"));
    assert_eq!(
        (gone.code, gone.body["reason"].as_str()),
        (404, Some("NotFound"))
    );

    // Finalizers hold an object until they are removed.
    let cms = "/api/v1/namespaces/default/configmaps";
    c.post(cms, &json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}, "data": {"a": "1"}}));
    assert_eq!(c.delete(&format!("{cms}/held")).code, 202);
    let held = c.get(&format!("{cms}/held"));
    assert!(held.body["metadata"]["deletionTimestamp"].is_string());
    let released = c.patch(
        &format!("{cms}/held"),
        &json!({"metadata": {"finalizers": null}}),
        "application/merge-patch+json",
    );
    assert_eq!(released.code, 200);
    assert_eq!(c.get(&format!("{cms}/held")).code, 404);

    // generateName, and deletecollection with a label selector.
    let generated = c.post(
        cms,
        &json!({"metadata": {"generateName": "gen-", "labels": {"batch": "x"}}}),
    );
    assert_eq!(generated.code, 201);
    let gen_name = generated.body["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    assert!(
        gen_name.starts_with("gen-") && gen_name.len() > 4,
        "{gen_name}"
    );
    c.post(
        cms,
        &json!({"metadata": {"name": "other-batch", "labels": {"batch": "y"}}}),
    );
    let swept = c.request(
        "DELETE",
        &format!("{cms}?labelSelector=batch%3Dx"),
        None,
        "",
    );
    assert_eq!(swept.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(c.get(&format!("{cms}/{gen_name}")).code, 404);
    assert_eq!(c.get(&format!("{cms}/other-batch")).code, 200);

    // Preconditions on delete.
    let cm = c.post(cms, &json!({"metadata": {"name": "pre"}})).body;
    let wrong = c.request(
        "DELETE",
        &format!("{cms}/pre"),
        Some(
            json!({"preconditions": {"uid": "nope"}})
                .to_string()
                .as_bytes(),
        ),
        "application/json",
    );
    assert_eq!(wrong.code, 409);
    let right = c.request(
        "DELETE",
        &format!("{cms}/pre"),
        Some(
            json!({"preconditions": {"uid": cm["metadata"]["uid"]}})
                .to_string()
                .as_bytes(),
        ),
        "application/json",
    );
    assert_eq!(right.code, 200);
}

fn list_paging_selectors_and_compaction(backend: Backend) {
    let store = start_store(backend, 1);
    let api = Apiserver::start(&store.endpoints_csv(), &[]);
    let c = Client::new(&api.url);
    let cms = "/api/v1/namespaces/default/configmaps";
    for i in 0..25 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        let r = c.post(cms, &json!({"metadata": {"name": format!("cm-{i:02}"), "labels": {"tier": tier, "n": i.to_string()}}}));
        assert_eq!(r.code, 201);
    }
    // Pages of 10 at one revision: a create between pages does not show up.
    let p1 = c.get(&format!("{cms}?limit=10"));
    assert_eq!(p1.body["items"].as_array().map(Vec::len), Some(10));
    assert_eq!(p1.body["kind"], "ConfigMapList");
    let token = p1.body["metadata"]["continue"]
        .as_str()
        .expect("continue")
        .to_string();
    c.post(cms, &json!({"metadata": {"name": "cm-99"}}));
    let p2 = c.get(&format!("{cms}?limit=10&continue={token}"));
    assert_eq!(
        p2.body["metadata"]["resourceVersion"],
        p1.body["metadata"]["resourceVersion"]
    );
    let token2 = p2.body["metadata"]["continue"]
        .as_str()
        .expect("continue")
        .to_string();
    let p3 = c.get(&format!("{cms}?limit=10&continue={token2}"));
    let last: Vec<&str> = p3.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(last, vec!["cm-20", "cm-21", "cm-22", "cm-23", "cm-24"]);
    assert!(p3.body["metadata"].get("continue").is_none());

    // Selectors, equality- and set-based, and field selectors.
    let names = |path: &str| -> Vec<String> {
        c.get(path).body["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|i| i["metadata"]["name"].as_str().map(String::from))
            .collect()
    };
    assert_eq!(names(&format!("{cms}?labelSelector=tier%3Deven")).len(), 13);
    assert_eq!(
        names(&format!("{cms}?labelSelector=n+in+(1,2,3),tier!%3Deven")),
        vec!["cm-01", "cm-03"]
    );
    assert_eq!(
        names(&format!("{cms}?fieldSelector=metadata.name%3Dcm-07")),
        vec!["cm-07"]
    );
    assert_eq!(
        names(&format!("{cms}?labelSelector=tier%3Dodd&limit=5")).len(),
        5
    );
    let bad = c.get(&format!("{cms}?fieldSelector=spec.nodeName%3Dx"));
    assert_eq!(bad.code, 400);
    // All namespaces.
    assert!(names("/api/v1/configmaps").len() >= 26);

    // After compaction the old page's token is 410 Gone (Expired).
    let rev: i64 = p1.body["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("rv");
    c.post(cms, &json!({"metadata": {"name": "cm-after"}}));
    let now = rv(&c.get(&format!("{cms}/cm-after")).body);
    store.compact(now);
    let expired = c.get(&format!("{cms}?limit=10&continue={token}"));
    assert_eq!(
        (expired.code, expired.body["reason"].as_str()),
        (410, Some("Expired")),
        "rev {rev}"
    );
    let exact = c.get(&format!(
        "{cms}?resourceVersion={rev}&resourceVersionMatch=Exact"
    ));
    assert_eq!(exact.code, 410);
}

fn watch_semantics(backend: Backend) {
    let store = start_store(backend, 1);
    let api = Apiserver::start(&store.endpoints_csv(), &[]);
    let c = Client::new(&api.url);
    let pods = "/api/v1/namespaces/default/pods";
    let first = c.post(pods, &pod("a", json!({"app": "web"}))).body;
    let start = rv(&first);

    // From a resourceVersion: later changes only, in order, selectors on old and new.
    let w = c.watch(&format!("{pods}?watch=true&resourceVersion={start}&labelSelector=app%3Dweb&allowWatchBookmarks=true"));
    let all = c.watch(&format!("{pods}?watch=true&resourceVersion={start}"));
    c.post(pods, &pod("b", json!({"app": "web"})));
    c.post(pods, &pod("other", json!({"app": "db"})));
    c.patch(
        &format!("{pods}/a"),
        &json!({"metadata": {"labels": {"x": "1"}}}),
        "application/merge-patch+json",
    );
    c.patch(
        &format!("{pods}/b"),
        &json!({"metadata": {"labels": {"app": "db"}}}),
        "application/merge-patch+json",
    );
    c.delete(&format!("{pods}/a"));
    let seen: Vec<(String, String)> = (0..4)
        .map(|_| {
            let e = w.next_event();
            (
                e["type"].as_str().unwrap_or("").to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    let expect = [
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
        ("DELETED", "a"),
    ];
    assert_eq!(
        seen,
        expect.map(|(a, b)| (a.to_string(), b.to_string())).to_vec()
    );
    let mut last_rv = 0;
    for _ in 0..5 {
        let e = all.next_event();
        let r = rv(&e["object"]);
        assert!(r > last_rv, "events in revision order");
        last_rv = r;
    }
    // Bookmarks arrive (the interval is 1 s in tests) with a current resourceVersion.
    let bm = (0..20)
        .map(|_| w.next_any())
        .find(|e| e["type"] == "BOOKMARK")
        .expect("a bookmark");
    assert!(rv(&bm["object"]) >= last_rv);

    // Without a resourceVersion: the current state first, as ADDED.
    let fresh = c.watch(&format!("{pods}?watch=true"));
    let e = fresh.next_event();
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("b"))
    );

    // Many watchers share one store watch per resource.
    let watchers: Vec<_> = (0..50)
        .map(|_| c.watch(&format!("{pods}?watch=true&resourceVersion={last_rv}")))
        .collect();
    let hub = api.pods_hub();
    support::eventually(Duration::from_secs(10), "50 hub subscribers", || {
        (hub.watchers() >= 50).then_some(())
    });
    c.post(pods, &pod("fan", json!({})));
    for w in &watchers {
        assert_eq!(w.next_event()["object"]["metadata"]["name"], "fan");
    }
    drop(watchers);

    // A start older than the watch cache goes to the store; compacted there, it is
    // 410 Expired as an ERROR event (a restarted apiserver's cache starts empty).
    let now = rv(&c.get(&format!("{pods}/fan")).body);
    c.post(pods, &pod("later", json!({})));
    store.compact(now);
    let restarted = Apiserver::start(&store.endpoints_csv(), &[]);
    let old = Client::new(&restarted.url)
        .watch(&format!("{pods}?watch=true&resourceVersion={}", start - 1));
    let e = old.next_event();
    assert_eq!(e["type"], "ERROR");
    assert_eq!(
        (e["object"]["code"].as_i64(), e["object"]["reason"].as_str()),
        (Some(410), Some("Expired"))
    );
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod kvstore {
            $( #[test] fn $name() { super::$name(super::Backend::Kvstore) } )*
        }
        mod etcd {
            $( #[test] fn $name() { super::$name(super::Backend::Etcd) } )*
        }
    };
}

both_backends!(
    crud_conflicts_and_errors,
    list_paging_selectors_and_compaction,
    watch_semantics,
);
