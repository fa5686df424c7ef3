//! kvctl against etcdctl: the same commands, the same output, byte for byte.
//!
//! Two single-member etcd servers are started on loopback, A for etcdctl and B for kvctl,
//! and one list of commands runs against both, one pair at a time: etcdctl's command on A,
//! then kvctl's on B. Both servers thus go through the same history, so revisions, counts,
//! versions and values must come out identical, and write commands can be compared as
//! freely as reads. Standard output, standard error and the exit code of each pair are
//! compared after masking only what legitimately differs between two servers or two runs:
//! - cluster and member IDs and the servers' ports (each server has its own URLs);
//! - lease IDs (time-based) and IDs of members added by a step;
//! - raft term and index, db size, durations (`took`), a lease's remaining TTL;
//! - etcdctl's client-library log records on stderr (`{"level":"warn",...}` from clientv3's
//!   retry interceptor): kvctl deliberately prints no such log lines.
//!
//! The test is skipped (with a message) when `/usr/bin/etcd` or `/usr/bin/etcdctl` is missing.
mod support;

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use support::*;

/// The commands both tools run, in order.
fn steps() -> Vec<Step> {
    let txn_success = "value(\"foo\") = \"qux\"\nmod(\"foo\") > \"0\"\n\nput foo t1\nget foo\ndel foo2 --prev-kv\n\nput foo fail\n\n";
    let txn_failure = "value(\"foo\") = \"nope\"\n\nput foo never\n\nget foo\nput t3 x --prev-kv\nget t --prefix --keys-only\n\n";
    vec![
        // put
        step("put foo bar"),
        step("put foo baz --prev-kv"),
        step("put foo qux --prev-kv -w json"),
        step("put foo2 v2 -w fields"),
        step("put foo3 v3 --prev-kv -w fields"),
        step("put stdinkey").stdin("from stdin\n"),
        step("put stdinkey").stdin(""),
        argv(&["put", "sp ace", "v<a>&\"b\"\n\tc"]),
        argv(&["put", "uni/é", "ü€\u{7f}"]),
        step("put foo --ignore-value"),
        step("put"),
        step("put k v --lease zz"),
        step("put k v --ignore-value"),
        step("put k v -w table"),
        step("put k v -w yaml"),
        // get
        step("get foo"),
        step("get foo -w json"),
        step("get foo -w fields"),
        step("get foo --prefix"),
        step("get foo --prefix --keys-only"),
        step("get foo --prefix --keys-only -w json"),
        step("get foo --prefix --limit 1 -w json"),
        step("get foo --prefix --limit 2 -w fields"),
        step("get foo --prefix --sort-by=value --order=descend"),
        step("get foo --prefix --sort-by=CREATE --order=ASCEND -w fields"),
        step("get foo --prefix --sort-by=modify"),
        step("get foo --prefix --order=descend --print-value-only"),
        step("get foo --from-key --limit 2"),
        step("get --from-key  --keys-only").stdin(""),
        argv(&["get", "", "--prefix", "--keys-only"]),
        argv(&["get", "", "--from-key", "--limit", "3", "-w", "json"]),
        step("get foo --rev 2"),
        step("get foo --rev 3 -w json"),
        step("get foo --rev -1"),
        step("get foo foo3"),
        step("get foo foo3 -w fields"),
        step("get foo --print-value-only"),
        step("get foo --print-value-only -w json"),
        step("get foo --consistency=s"),
        step("--hex get foo --prefix"),
        step("get uni/ --prefix"),
        step("get uni/ --prefix -w json"),
        step("get uni/ --prefix -w fields"),
        argv(&["get", "sp ace", "-w", "json"]),
        argv(&["get", "sp ace", "-w", "fields"]),
        step("get nothing"),
        step("get nothing -w json"),
        step("get nothing -w fields"),
        step("get foo -w table"),
        step("get"),
        step("get a b --prefix"),
        step("get a --prefix --from-key"),
        step("get x --sort-by=FOO"),
        step("get x --order=FOO"),
        step("get x --consistency=q"),
        step("get x -w yaml"),
        step("get foo --rev 100000"),
        // del
        step("put p/a 1"),
        step("put p/b 2"),
        step("put p/c 3"),
        step("put p/d 4"),
        step("del p/a"),
        step("del p/b --prev-kv"),
        step("del p/c p/e --prev-kv -w json"),
        step("del p/ --prefix -w fields"),
        step("del p/ --prefix"),
        step("del nothing -w json"),
        step("put d/1 x"),
        step("put d/2 y"),
        step("del d/ --prefix --prev-kv -w json"),
        step("del zzz --from-key -w fields"),
        step("del"),
        step("del a b c"),
        step("del a b --prefix"),
        step("del a --prefix --from-key"),
        // txn
        step("txn").stdin(txn_success),
        step("txn -w json").stdin(txn_failure),
        step("txn -w fields").stdin(txn_failure),
        step("txn").stdin(txn_failure),
        step("txn -i").stdin("mod(\"foo\") > \"0\"\n\nget foo --keys-only\n\n\n"),
        step("txn -w json").stdin("ver(\"foo\") > \"1\"\nc(\"foo\") != \"0\"\n\nput foo \"quoted value\"\n\n\n"),
        step("txn").stdin("\n\nput foo t1\n"),
        step("txn").stdin("mod(\"foo\") > \"0\""),
        step("txn").stdin("mod foo > 0\n\n\n\n"),
        step("txn").stdin("mod(\"foo\")>\"0\"\n\n\n\n"),
        step("txn").stdin("mod(\"foo\" = \"0\"\n\n\n\n"),
        step("txn").stdin("foo(\"k\") = \"0\"\n\n\n\n"),
        step("txn").stdin("mod(\"foo\") = \"x\"\n\n\n\n"),
        step("txn").stdin("\nfoo\n\n\n"),
        step("txn").stdin("\nfoo bar\n\n\n"),
        step("txn").stdin("\nput\n\n\n"),
        step("txn").stdin("\nget a --prefix --from-key\n\n\n"),
        step("txn extra").stdin(""),
        step("txn -w yaml").stdin(""),
        step("txn -w table").stdin("\n\n\n"),
        // watch: history from a captured revision
        step("put w/a 1 -w json").capture(Capture::Rev),
        step("put w/b 2"),
        step("put w/a 3"),
        step("del w/b"),
        step("watch w/ --prefix --rev {REV} --prev-kv").lines(16),
        step("watch w/ --prefix --rev {REV} -w json").lines(1),
        step("watch w/ --prefix --rev {REV} --prev-kv -w fields").lines(44),
        step("watch w/a w/c --rev {REV}").lines(12),
        step("watch w/a --rev {REV}").lines(6),
        step("watch -i").stdin("watch w/a --rev {REV}\n").lines(6),
        argv(&["watch", "w/a", "--rev", "{REV}", "--", "sh", "-c", "echo \"$ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE\""])
            .lines(8),
        step("watch"),
        step("watch a b --prefix"),
        step("watch w/a -w table --rev {REV}"),
        // compaction
        step("compaction {REV}"),
        step("get foo --rev 2"),
        step("get foo --rev 2 -w json"),
        step("watch w/ --prefix --rev 2"),
        step("watch w/ --prefix --rev 2 -w json"),
        step("watch w/ --prefix --rev 2 -w fields"),
        step("compaction 2"),
        step("compaction {REV} --physical"),
        step("compaction"),
        step("compaction abc"),
        step("get w/ --prefix -w json"),
        // lease
        step("lease grant 600").capture(Capture::Lease),
        step("put lk lv --lease {LEASE}"),
        step("put lk2 lv2 --lease {LEASE} --prev-kv -w json"),
        step("get lk -w json"),
        step("get lk -w fields"),
        step("lease timetolive {LEASE}").mask_ttl(),
        step("lease timetolive {LEASE} -w json").mask_ttl(),
        step("lease timetolive {LEASE} -w fields").mask_ttl(),
        step("del lk2"),
        step("lease timetolive {LEASE} --keys").mask_ttl(),
        step("lease timetolive {LEASE} --keys -w json").mask_ttl(),
        step("lease timetolive {LEASE} --keys -w fields").mask_ttl(),
        step("lease list"),
        step("lease list -w json"),
        step("lease list -w fields"),
        step("lease keep-alive --once {LEASE}"),
        step("lease keep-alive --once {LEASE} -w json"),
        step("lease keep-alive --once {LEASE} -w fields"),
        step("put lk lv2 --ignore-lease --prev-kv"),
        step("lease revoke {LEASE}"),
        step("get lk"),
        step("lease revoke {LEASE}"),
        step("lease timetolive {LEASE}"),
        step("lease timetolive {LEASE} -w json"),
        step("lease keep-alive --once {LEASE}"),
        step("lease grant 600 -w json").capture(Capture::Lease),
        step("lease revoke {LEASE} -w json"),
        step("lease grant 600 -w fields").capture(Capture::Lease),
        step("lease revoke {LEASE} -w fields"),
        step("lease grant 600 -w table"),
        step("lease list").capture(Capture::LeaseFromList),
        step("lease list -w table"),
        step("lease revoke {LEASE}"),
        step("lease grant 6").capture(Capture::Lease),
        Step { kind: Kind::KeepAliveThenRevoke, ..step("lease keep-alive {LEASE}") },
        step("lease list"),
        step("lease grant"),
        step("lease grant abc"),
        step("lease grant 9999999999"),
        step("lease revoke"),
        step("lease revoke zz"),
        step("lease timetolive"),
        step("lease keep-alive"),
        step("lease keep-alive --once xyz"),
        // member
        step("member list").unordered_members(),
        step("member list -w json").unordered_members(),
        step("member list -w fields").unordered_members(),
        step("member list -w table").unordered_members(),
        step("member add learner1 --learner --peer-urls=http://127.0.0.1:1,http://127.0.0.1:2")
            .capture(Capture::Member).unordered_members(),
        step("member list").unordered_members(),
        step("member list -w table").unordered_members(),
        step("member update {MEMBER} --peer-urls=http://127.0.0.1:3").unordered_members(),
        step("member list -w json").unordered_members(),
        step("member promote {MEMBER}").unordered_members(),
        step("member remove {MEMBER}").unordered_members(),
        step("member remove {MEMBER}").unordered_members(),
        step("member add learner2 --learner --peer-urls=http://127.0.0.1:4 -w json")
            .capture(Capture::Member).unordered_members(),
        step("member update {MEMBER} --peer-urls=http://127.0.0.1:5 -w json").unordered_members(),
        step("member remove {MEMBER} -w json").unordered_members(),
        step("member add").unordered_members(),
        step("member add x").unordered_members(),
        step("member add x y http://foo").unordered_members(),
        step("member add x --peer-urls=foo").unordered_members(),
        step("member add x --peer-urls=http://127.0.0.1").unordered_members(),
        step("member remove").unordered_members(),
        step("member remove zz").unordered_members(),
        step("member update 1234").unordered_members(),
        step("member promote 1234").unordered_members(),
        // endpoint
        step("endpoint status"),
        step("endpoint status -w json"),
        step("endpoint status -w fields"),
        step("endpoint status -w table"),
        step("endpoint status --cluster"),
        step("endpoint --cluster status -w table"),
        step("endpoint health"),
        step("endpoint health -w json"),
        step("endpoint health -w fields"),
        step("endpoint health -w table"),
        step("endpoint health --cluster -w table"),
        step("endpoint hashkv"),
        step("endpoint hashkv --rev=3 -w json"),
        step("endpoint hashkv -w fields"),
        step("endpoint hashkv --cluster -w table"),
        step("--endpoints {EP},127.0.0.1:{DEAD} --command-timeout 1s --dial-timeout 1s endpoint hashkv")
            .own_endpoints(),
        step("--endpoints {EP},127.0.0.1:{DEAD} --command-timeout 1s --dial-timeout 1s endpoint health -w table")
            .own_endpoints(),
        step("--endpoints {EP},127.0.0.1:{DEAD} --command-timeout 1s --dial-timeout 1s endpoint status")
            .own_endpoints(),
        // alarm, defrag
        step("alarm list"),
        step("alarm list -w json"),
        step("alarm list -w table"),
        step("alarm disarm"),
        step("alarm disarm -w json"),
        step("alarm list x"),
        step("alarm disarm x"),
        step("defrag"),
        step("defrag -w json"),
        step("defrag --cluster"),
        // no server at all
        step("--endpoints 127.0.0.1:{DEAD} --command-timeout 1s --dial-timeout 1s get foo")
            .own_endpoints(),
        step("--endpoints 127.0.0.1:{DEAD} --command-timeout 1s --dial-timeout 1s endpoint health")
            .own_endpoints(),
    ]
}

#[test]
fn kvctl_output_matches_etcdctl_against_real_etcd() {
    if !Path::new(ETCD).exists() || !Path::new(ETCDCTL).exists() {
        eprintln!("skipping: {ETCD} or {ETCDCTL} is not installed");
        return;
    }
    let started = Instant::now();
    let ports = free_ports(5);
    let (a, b) = (
        Etcd::start(ports[0], ports[1]),
        Etcd::start(ports[2], ports[3]),
    );
    let dead_port = ports[4];
    let mut sides = [a, b].map(|etcd| {
        let (cluster_id, member_id) = ids(&format!("127.0.0.1:{}", etcd.client_port));
        Side {
            tool: Tool::Etcdctl,
            etcd,
            cluster_id,
            member_id,
            leases: vec![],
            members: vec![],
            rev: 0,
        }
    });
    sides[1].tool = Tool::Kvctl;

    let steps = steps();
    let mut mismatches = Vec::new();
    // AGAINST_ETCD_DUMP=<file> writes every pair's normalized output, for review.
    let mut dump = std::env::var("AGAINST_ETCD_DUMP")
        .ok()
        .map(|p| std::fs::File::create(p).expect("dump file"));
    for step in &steps {
        let mut outs = Vec::new();
        for side in sides.iter_mut() {
            let out = side.run(step, dead_port);
            outs.push(Output {
                stdout: normalize(side, step, &out.stdout, false),
                stderr: normalize(side, step, &out.stderr, true),
                code: out.code,
            });
        }
        if let Some(f) = dump.as_mut() {
            let _ = writeln!(
                f,
                "$ {}\n--- etcdctl (exit {:?})\n{}{}--- kvctl (exit {:?})\n{}{}",
                step.args.join(" "),
                outs[0].code,
                outs[0].stdout,
                outs[0].stderr,
                outs[1].code,
                outs[1].stdout,
                outs[1].stderr
            );
        }
        if outs[0] != outs[1] {
            mismatches.push(format!(
                "$ {}\n--- etcdctl (exit {:?})\n{}{}--- kvctl (exit {:?})\n{}{}",
                step.args.join(" "),
                outs[0].code,
                outs[0].stdout,
                outs[0].stderr,
                outs[1].code,
                outs[1].stdout,
                outs[1].stderr
            ));
        }
    }
    eprintln!(
        "{} command pairs compared in {:.1}s, {} mismatched",
        steps.len(),
        started.elapsed().as_secs_f64(),
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "kvctl differs from etcdctl:\n\n{}",
        mismatches.join("\n")
    );
}
