//! Backups end to end, with real processes: `kvctl snapshot save` from a member of a 3-member
//! cluster under a write load, `snapshot status`, `snapshot restore` of each member of a new
//! 3-member cluster, and that cluster started with the same flags: same history (HashKV at the
//! snapshot's revision), same revision and compacted revision, the leases, a new cluster ID.
//! Also: `etcdctl snapshot save` against kvstore gives a file kvctl accepts; truncated and
//! corrupted files and existing data directories are refused with nothing written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kvstore_proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, maintenance_client::MaintenanceClient,
    HashKvRequest, HashKvResponse, LeaseGrantRequest, LeaseTimeToLiveRequest, PutRequest,
    SnapshotRequest, StatusRequest,
};
use tonic::transport::Channel;

#[path = "support/members.rs"]
mod members;

use members::*;

/// Flags every member of these tests runs with (applies need no fsync for what is tested).
const FLAGS: &[&str] = &["--unsafe-no-fsync"];

fn kvctl(args: &[&str]) -> Output {
    Command::new(kvctl_binary())
        .args(args)
        .output()
        .expect("run kvctl")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(format!("http://{endpoint}"))
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

async fn hash_kv(endpoint: &str, revision: i64) -> HashKvResponse {
    MaintenanceClient::new(channel(endpoint).await)
        .hash_kv(HashKvRequest { revision })
        .await
        .expect("HashKV")
        .into_inner()
}

async fn cluster_id(endpoint: &str) -> u64 {
    MaintenanceClient::new(channel(endpoint).await)
        .status(StatusRequest {})
        .await
        .expect("Status")
        .into_inner()
        .header
        .map_or(0, |h| h.cluster_id)
}

async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str, lease: i64) -> i64 {
    kv.put(PutRequest {
        key: key.into(),
        value: value.into(),
        lease,
        ..PutRequest::default()
    })
    .await
    .expect("put")
    .into_inner()
    .header
    .map_or(0, |h| h.revision)
}

/// Fields of `kvctl snapshot status -w json`.
fn status_of(file: &Path) -> (u32, i64, u64) {
    let out = kvctl(&[
        "snapshot",
        "status",
        file.to_str().expect("utf-8 path"),
        "-w",
        "json",
    ]);
    assert!(out.status.success(), "status: {}", text(&out));
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| -> u64 {
        let start = json.find(&format!("\"{name}\":")).expect(name) + name.len() + 3;
        json[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .expect("number")
    };
    (
        field("hash") as u32,
        field("revision") as i64,
        field("totalKey"),
    )
}

/// `kvctl snapshot restore` of `file` as member `spec` of the cluster `initial`, into
/// `dir/<name>`.
fn restore(file: &Path, dir: &Path, spec: &Spec, initial: &str, token: &str) -> Output {
    let data_dir = dir.join(&spec.name);
    kvctl(&[
        "snapshot",
        "restore",
        file.to_str().expect("utf-8 path"),
        "--name",
        &spec.name,
        "--data-dir",
        data_dir.to_str().expect("utf-8 path"),
        "--initial-cluster",
        initial,
        "--initial-cluster-token",
        token,
        "--initial-advertise-peer-urls",
        &spec.peer_url(),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_under_load_and_restored_into_a_new_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = start_cluster(dir.path(), &["a", "b", "c"], FLAGS);
    let ep = source.specs[1].endpoint();
    let mut kv = KvClient::new(channel(&ep).await);
    for i in 0..200 {
        put(&mut kv, &format!("key/{}", i % 50), &format!("v{i}"), 0).await;
    }
    let lease = LeaseClient::new(channel(&ep).await)
        .lease_grant(LeaseGrantRequest { ttl: 600, id: 0 })
        .await
        .expect("lease grant")
        .into_inner()
        .id;
    put(&mut kv, "leased/1", "x", lease).await;
    let compacted = put(&mut kv, "leased/2", "y", lease).await - 20;
    ok(
        &etcdctl(&ep, &["compaction", &compacted.to_string()]),
        "compaction",
    );

    // A write load on the leader's side while the follower streams its snapshot.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, writes) = (Arc::clone(&stop), Arc::clone(&writes));
        let mut kv = KvClient::new(channel(&source.specs[0].endpoint()).await);
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                put(&mut kv, &format!("load/{}", i % 500), &"z".repeat(100), 0).await;
                writes.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let file = dir.path().join("backup.snap");
    let file_s = file.to_str().expect("utf-8 path").to_string();
    let saving = {
        let (ep, file_s) = (ep.clone(), file_s.clone());
        tokio::task::spawn_blocking(move || {
            kvctl(&["--endpoints", &ep, "snapshot", "save", &file_s])
        })
    };
    let saved = saving.await.expect("save task");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load task");
    assert!(saved.status.success(), "save: {}", text(&saved));
    assert_eq!(
        String::from_utf8_lossy(&saved.stdout),
        format!("Snapshot saved at {file_s}\n")
    );
    assert!(
        String::from_utf8_lossy(&saved.stderr).contains("revision "),
        "{}",
        text(&saved)
    );
    assert!(
        !dir.path().join("backup.snap.part").exists(),
        "part file left"
    );
    assert!(
        writes.load(Ordering::Relaxed) > 20,
        "the load ran during the save"
    );

    let (_, revision, _) = status_of(&file);
    assert!(revision > compacted, "snapshot revision {revision}");
    let source_hash = hash_kv(&ep, revision).await;
    assert_eq!(source_hash.compact_revision, compacted);
    let source_cluster = cluster_id(&ep).await;

    // etcdctl 3.4 saves a usable file too (it only checks the size is sha256-shaped).
    let etcd_file = dir.path().join("etcdctl.snap");
    let etcd_file_s = etcd_file.to_str().expect("utf-8 path");
    ok(
        &etcdctl(&ep, &["snapshot", "save", etcd_file_s]),
        "etcdctl snapshot save",
    );
    let (_, etcd_rev, _) = status_of(&etcd_file);
    assert!(etcd_rev >= revision);

    // A new cluster, each member restored from the kvctl file (the third from etcdctl's
    // would be a different revision; every member must restore the same snapshot).
    let new_dir = dir.path().join("restored");
    std::fs::create_dir(&new_dir).expect("mkdir");
    let specs: Vec<Spec> = ["x", "y", "z"].iter().map(|n| Spec::new(n)).collect();
    let initial = specs
        .iter()
        .map(|s| format!("{}={}", s.name, s.peer_url()))
        .collect::<Vec<_>>()
        .join(",");
    let token = "restored-cluster";
    for spec in &specs {
        let out = restore(&file, &new_dir, spec, &initial, token);
        assert!(
            out.status.success(),
            "restore {}: {}",
            spec.name,
            text(&out)
        );
    }
    let _procs: Vec<Proc> = specs
        .iter()
        .map(|s| start_with(&new_dir, s, &initial, "new", token, FLAGS))
        .collect();
    let all = specs
        .iter()
        .map(Spec::endpoint)
        .collect::<Vec<_>>()
        .join(",");
    eventually(
        Duration::from_secs(30),
        "the restored cluster healthy",
        || {
            etcdctl(&all, &["endpoint", "health"])
                .status
                .success()
                .then_some(())
        },
    );
    for spec in &specs {
        let h = hash_kv(&spec.endpoint(), revision).await;
        assert_eq!(
            (h.hash, h.compact_revision),
            (source_hash.hash, source_hash.compact_revision),
            "HashKV at {revision} on {}",
            spec.name
        );
        assert_eq!(h.header.map(|h| h.revision), Some(revision));
        let id = cluster_id(&spec.endpoint()).await;
        assert!(id != 0 && id != source_cluster, "cluster ID {id:x}");
    }
    let ttl = LeaseClient::new(channel(&specs[2].endpoint()).await)
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: lease,
            keys: true,
        })
        .await
        .expect("lease TTL")
        .into_inner();
    assert!(ttl.ttl > 0, "lease {lease:x} kept: {ttl:?}");
    assert_eq!(ttl.keys.len(), 2);
    let members = ok(&etcdctl(&all, &["member", "list"]), "member list");
    assert_eq!(members.lines().count(), 3, "{members}");
    for spec in &specs {
        assert!(members.contains(&spec.peer_url()), "{members}");
    }
    let mut kv = KvClient::new(channel(&specs[0].endpoint()).await);
    assert_eq!(put(&mut kv, "after", "restore", 0).await, revision + 1);

    // The etcdctl-saved file restores too.
    let out = restore(
        &etcd_file,
        &new_dir,
        &Spec::new("w"),
        &format!("w={}", "http://127.0.0.1:1"),
        token,
    );
    assert!(
        !out.status.success(),
        "w's peer URL does not match --initial-cluster"
    );
    let w = Spec::new("w");
    let out = restore(
        &etcd_file,
        &new_dir,
        &w,
        &format!("w={}", w.peer_url()),
        token,
    );
    assert!(
        out.status.success(),
        "restore etcdctl's file: {}",
        text(&out)
    );
}

/// A data dir's parent holds nothing the restore left behind (the data dir itself aside).
fn leftovers(parent: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(parent)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains("restoring"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_and_existing_data_dirs_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = start_cluster(dir.path(), &["s"], FLAGS);
    let ep = source.specs[0].endpoint();
    let mut kv = KvClient::new(channel(&ep).await);
    for i in 0..100 {
        put(&mut kv, &format!("k{i}"), &"v".repeat(30_000), 0).await;
    }

    // Several endpoints: refused as etcdctl 3.4 refuses them (exit 5), nothing written.
    let file = dir.path().join("s.snap");
    let file_s = file.to_str().expect("utf-8 path");
    let two = format!("{ep},127.0.0.1:1");
    let out = kvctl(&["--endpoints", &two, "snapshot", "save", file_s]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "Error: snapshot must be requested to one selected node, not multiple [{ep} 127.0.0.1:1]\n"
        )
    );
    assert!(!file.exists());

    let out = kvctl(&["--endpoints", &ep, "snapshot", "save", file_s]);
    assert!(out.status.success(), "save: {}", text(&out));
    let bytes = std::fs::read(&file).expect("read snapshot");

    // The stream itself: every message says exactly how many bytes remain after it (the
    // first one gives the total) and carries the snapshot's revision; together they are a
    // whole snapshot of that revision.
    let mut stream = MaintenanceClient::new(channel(&ep).await)
        .snapshot(SnapshotRequest {})
        .await
        .expect("Snapshot")
        .into_inner();
    let (mut streamed, mut total, mut messages) = (Vec::new(), None, 0);
    while let Some(m) = stream.message().await.expect("snapshot message") {
        streamed.extend_from_slice(&m.blob);
        messages += 1;
        let total = *total.get_or_insert(m.blob.len() as u64 + m.remaining_bytes);
        assert_eq!(
            streamed.len() as u64 + m.remaining_bytes,
            total,
            "remaining_bytes of message {messages}"
        );
        assert_eq!(m.header.map(|h| h.revision), Some(101));
    }
    assert_eq!(Some(streamed.len() as u64), total);
    assert!(messages >= 3, "3 MB in 1 MiB messages: {messages}");
    let streamed_status =
        kvstore::backup::status::status_of(streamed.as_slice(), streamed.len() as u64)
            .expect("the stream is a whole snapshot");
    assert_eq!(streamed_status.revision, 101);
    assert_eq!(bytes.len() % 512, 32, "sized as etcdctl 3.4 expects");
    let (_, revision, keys) = status_of(&file);
    assert_eq!(revision, 101);
    assert!(keys > 100);

    let target = dir.path().join("restored");
    let target_s = target.to_str().expect("utf-8 path").to_string();
    let restore_from = |path: &Path, extra: &[&str]| {
        let mut args = vec![
            "snapshot",
            "restore",
            path.to_str().expect("utf-8 path"),
            "--data-dir",
            &target_s,
        ];
        args.extend_from_slice(extra);
        kvctl(&args)
    };
    let mut damaged = Vec::new();
    for cut in [bytes.len() / 2, bytes.len() - 1, bytes.len() - 5, 7] {
        damaged.push((format!("cut at {cut}"), bytes[..cut].to_vec(), "truncated"));
    }
    // Inside a value, so the records still parse and only the checksum can tell.
    let value_at = bytes
        .windows(200)
        .position(|w| w.iter().all(|b| *b == b'v'))
        .expect("a value in the file");
    let mut flipped = bytes.clone();
    flipped[value_at + 100] ^= 0x20;
    damaged.push(("a flipped byte".into(), flipped, "checksum mismatch"));
    let mut bad_crc = bytes.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x01;
    damaged.push((
        "a wrong checksum".into(),
        bad_crc.clone(),
        "checksum mismatch",
    ));
    for (what, content, reason) in &damaged {
        let path = dir.path().join("damaged.snap");
        std::fs::write(&path, content).expect("write damaged file");
        let out = restore_from(&path, &[]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(reason) && err.contains("nothing was restored"),
            "{what}: {err}"
        );
        assert!(!target.exists(), "{what}: data dir written");
        assert!(leftovers(dir.path()).is_empty(), "{what}: temp dir left");
        let out = kvctl(&["snapshot", "status", path.to_str().expect("utf-8 path")]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "status of {what}: {}",
            text(&out)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains(reason));
    }

    // A wrong checksum on an otherwise whole file restores with --skip-hash-check (etcd's
    // escape hatch); then the data dir exists and a second restore is refused.
    let path = dir.path().join("bad-crc.snap");
    std::fs::write(&path, &bad_crc).expect("write");
    let out = restore_from(&path, &["--skip-hash-check"]);
    assert!(out.status.success(), "skip-hash-check: {}", text(&out));
    assert!(target.join("db").is_dir());
    let out = restore_from(&file, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("Error: data-dir \"{target_s}\" exists\n")
    );

    // A non-empty directory is left alone; an empty one (a mount point) is used.
    std::fs::remove_dir_all(&target).expect("rm");
    std::fs::create_dir(&target).expect("mkdir");
    std::fs::write(target.join("keep"), b"precious").expect("write");
    let out = restore_from(&file, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        std::fs::read(target.join("keep")).expect("kept"),
        b"precious"
    );
    assert!(!target.join("db").exists());
    std::fs::remove_file(target.join("keep")).expect("rm");
    let out = restore_from(&file, &[]);
    assert!(out.status.success(), "into an empty dir: {}", text(&out));
    assert!(leftovers(dir.path()).is_empty());
}
