//! Membership changes driven by real `etcdctl` (Debian's etcd-client, 3.4) against real
//! `kvstore` processes: add a learner, start it with `--initial-cluster-state existing`, check
//! what a learner refuses, promote it once it has caught up, remove another member, and keep
//! serving throughout.

use std::path::Path;
use std::time::{Duration, Instant};

#[path = "support/members.rs"]
mod members;

use members::*;

#[test]
fn etcdctl_adds_promotes_and_removes_members() {
    if !Path::new(ETCDCTL).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "etcd-client must be installed in CI"
        );
        eprintln!("SKIPPED: install etcd-client to run the membership test");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let StartedCluster {
        specs,
        initial,
        mut procs,
        all,
    } = start_cluster(dir.path(), &["m0", "m1", "m2"], &[]);
    for i in 0..300 {
        ok(
            &etcdctl(&specs[i % 3].endpoint(), &["put", &format!("k{i:04}"), "v"]),
            "put",
        );
    }

    // Add a learner and start it.
    let learner = Spec::new("m3");
    let out = ok(
        &etcdctl(
            &all,
            &[
                "member",
                "add",
                "m3",
                "--learner",
                &format!("--peer-urls={}", learner.peer_url()),
            ],
        ),
        "member add --learner",
    );
    assert!(out.contains("added to cluster"), "{out}");
    assert!(
        out.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
        "{out}"
    );
    let learner_id = out
        .split_whitespace()
        .nth(1)
        .expect("member ID in the output")
        .to_string();
    let joined = format!("{initial},m3={}", learner.peer_url());
    let _learner_proc = start(dir.path(), &learner, &joined, "existing");

    // The learner catches up and serves serializable reads, but refuses writes and
    // linearizable reads as etcd's learners do.
    eventually(Duration::from_secs(30), "the learner to catch up", || {
        let out = etcdctl(&learner.endpoint(), &["get", "k0299", "--consistency=s"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("k0299")
            .then_some(())
    });
    let refused = etcdctl(&learner.endpoint(), &["put", "x", "y"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("rpc not supported for learner"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let list = ok(&etcdctl(&all, &["member", "list"]), "member list");
    assert!(
        list.contains(&format!("{learner_id}, started, m3")),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.contains("m3") && l.ends_with("true")),
        "{list}"
    );

    // Promote it (retrying while it is not yet in sync, as an operator would).
    let started = Instant::now();
    eventually(Duration::from_secs(30), "a successful promote", || {
        let out = etcdctl(&all, &["member", "promote", &learner_id]);
        if out.status.success() {
            return Some(());
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            err.contains("in sync with leader") || err.contains("leader changed"),
            "unexpected promote failure: {err}"
        );
        None
    });
    eprintln!(
        "learner promoted {:?} after it was started",
        started.elapsed()
    );
    ok(
        &etcdctl(&learner.endpoint(), &["put", "from-m3", "yes"]),
        "put on the promoted member",
    );
    let got = ok(
        &etcdctl(&learner.endpoint(), &["get", "from-m3"]),
        "linearizable get",
    );
    assert_eq!(got, "from-m3\nyes\n");

    // MemberUpdate: give m1 a second peer URL; the list shows both, and m1 keeps working.
    let m1_id = list_id(&all, "m1");
    let extra_url = format!("http://127.0.0.1:{}", free_port());
    let out = ok(
        &etcdctl(
            &all,
            &[
                "member",
                "update",
                &m1_id,
                &format!("--peer-urls={},{extra_url}", specs[1].peer_url()),
            ],
        ),
        "member update",
    );
    assert!(out.contains("updated in cluster"), "{out}");
    let list = ok(
        &etcdctl(&all, &["member", "list"]),
        "member list after update",
    );
    assert!(list.contains(&extra_url), "{list}");
    ok(
        &etcdctl(&specs[1].endpoint(), &["put", "via-m1", "ok"]),
        "put through m1",
    );

    // Remove m0 and stop it: four members become three, and the cluster keeps serving.
    let list = ok(&etcdctl(&all, &["member", "list"]), "member list");
    let m0_id = list
        .lines()
        .find(|l| l.contains(", m0, "))
        .and_then(|l| l.split(',').next())
        .expect("m0 listed")
        .to_string();
    let rest = [&specs[1], &specs[2], &learner]
        .iter()
        .map(|s| s.endpoint())
        .collect::<Vec<_>>()
        .join(",");
    ok(
        &etcdctl(&rest, &["member", "remove", &m0_id]),
        "member remove",
    );
    procs[0] = None;
    let list = ok(
        &etcdctl(&rest, &["member", "list"]),
        "member list after remove",
    );
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(!list.contains(", m0, "), "{list}");
    eventually(Duration::from_secs(30), "writes after the removal", || {
        etcdctl(&rest, &["put", "after-remove", "ok"])
            .status
            .success()
            .then_some(())
    });
    let status = ok(
        &etcdctl(&rest, &["endpoint", "status", "-w", "table"]),
        "endpoint status",
    );
    assert_eq!(
        status.matches("true").count(),
        1,
        "exactly one leader:\n{status}"
    );
    drop(procs);
}

/// (member ID, is leader) of each endpoint, from `etcdctl endpoint status -w table`.
fn leadership(endpoints: &str) -> Vec<(String, bool)> {
    let out = etcdctl(endpoints, &["endpoint", "status", "-w", "table"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("| 127."))
        .map(|l| {
            let cols: Vec<&str> = l.split('|').map(str::trim).collect();
            (cols[2].to_string(), cols[5] == "true")
        })
        .collect()
}

#[test]
fn etcdctl_move_leader_transfers_leadership() {
    if !Path::new(ETCDCTL).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "etcd-client must be installed in CI"
        );
        eprintln!("SKIPPED: install etcd-client to run the move-leader test");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let StartedCluster {
        procs: _procs, all, ..
    } = start_cluster(dir.path(), &["a", "b", "c"], &[]);
    let members = eventually(Duration::from_secs(30), "one leader", || {
        let l = leadership(&all);
        (l.len() == 3 && l.iter().filter(|(_, lead)| *lead).count() == 1).then_some(l)
    });
    for round in 0..2 {
        let target = members
            .iter()
            .map(|(id, _)| id.clone())
            .find(|id| !leadership(&all).iter().any(|(l, lead)| l == id && *lead))
            .expect("a follower");
        let started = Instant::now();
        // etcdctl in the first round, kvctl in the second: both print etcdctl's line.
        let out = if round == 0 {
            ok(
                &etcdctl(&all, &["move-leader", &target]),
                "etcdctl move-leader",
            )
        } else {
            let kvctl = kvctl_binary();
            let run = std::process::Command::new(kvctl)
                .arg(format!("--endpoints={all}"))
                .args(["move-leader", &target])
                .output()
                .expect("run kvctl");
            ok(&run, "kvctl move-leader")
        };
        assert!(out.starts_with("Leadership transferred from "), "{out}");
        assert!(out.trim_end().ends_with(&format!(" to {target}")), "{out}");
        eprintln!(
            "round {round}: leadership moved to {target} in {:?}",
            started.elapsed()
        );
        let now = leadership(&all);
        assert!(
            now.iter().any(|(id, lead)| *id == target && *lead),
            "{target} should lead now: {now:?}"
        );
        ok(
            &etcdctl(&all, &["put", "after-move", "ok"]),
            "put after move",
        );
    }
    let refused = etcdctl(&all, &["move-leader", "1234"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("bad leader transferee"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn a_member_started_with_the_wrong_token_refuses_to_take_part() {
    if !Path::new(ETCDCTL).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "etcd-client must be installed in CI"
        );
        eprintln!("SKIPPED: install etcd-client to run the wrong-token test");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let StartedCluster {
        initial,
        procs: _procs,
        all,
        ..
    } = start_cluster(dir.path(), &["p0", "p1", "p2"], &[]);
    ok(&etcdctl(&all, &["put", "k", "v"]), "put");
    let joiner = Spec::new("p3");
    ok(
        &etcdctl(
            &all,
            &[
                "member",
                "add",
                "p3",
                "--learner",
                &format!("--peer-urls={}", joiner.peer_url()),
            ],
        ),
        "member add",
    );
    let joined = format!("{initial},p3={}", joiner.peer_url());
    let _joiner = start_with(
        dir.path(),
        &joiner,
        &joined,
        "existing",
        "another-token",
        &[],
    );
    let log_path = dir.path().join("p3.log");
    eventually(
        Duration::from_secs(30),
        "a clear refusal in the joiner's log",
        || {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            log.contains("refused a peer request meant for another member")
                .then_some(())
        },
    );
    // It never received the data.
    let out = etcdctl(&joiner.endpoint(), &["get", "k", "--consistency=s"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("k\nv"),
        "the wrong-token member must not have replicated data"
    );
}
