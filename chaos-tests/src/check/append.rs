//! Strict serializability of list-append transactions, the way Elle infers it.
//!
//! Every appended value is unique per key, so a read list reveals the order of the appends
//! before it (the version order: the longest read, which every other read must be a prefix
//! of). From the orders, dependencies between transactions follow: ww (appended the next
//! version), wr (read the version another appended), rw (read a version another overwrote),
//! and rt (finished before the other began). A cycle is an anomaly: only ww edges is G0, ww+wr
//! is G1c, exactly one rw is G-single, more rw is G2; one that needs an rt edge breaks strict
//! serializability only. Also reported: reads of aborted appends (G1a), values nobody
//! appended, duplicates, incompatible orders, and acknowledged appends missing from the final
//! read (lost writes). Not checked: G1b (intermediate reads; our transactions append at most
//! once per key and read before appending).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::Verdict;
use crate::history::{ops, Call, Entry, Mop, Op, Status};

/// The process number of the harness's final reads.
pub const FINAL_PROCESS: u64 = u64::MAX;

/// A dependency kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dep {
    Ww,
    Wr,
    Rw,
    Rt,
}

/// The dependency graph: edges (from, to, kind) between transaction indexes.
type Graph = Vec<Vec<(usize, Dep)>>;

fn reads(op: &Op) -> impl Iterator<Item = (&String, &Vec<u64>)> {
    let mops: &[Mop] = match &op.call {
        Call::Txn { mops } => mops,
        _ => &[],
    };
    mops.iter().filter_map(|m| match m {
        Mop::Read {
            key,
            list: Some(list),
        } => Some((key, list)),
        _ => None,
    })
}

fn appends(op: &Op) -> impl Iterator<Item = (&String, u64)> {
    let mops: &[Mop] = match &op.call {
        Call::Txn { mops } => mops,
        _ => &[],
    };
    mops.iter().filter_map(|m| match m {
        Mop::Append { key, value } => Some((key, *value)),
        _ => None,
    })
}

/// Checks the list-append transactions of a history.
pub fn check(entries: &[Entry]) -> Verdict {
    let txns: Vec<&Op> = ops(entries)
        .filter(|o| matches!(o.call, Call::Txn { .. }))
        .collect();
    let mut problems = Vec::new();
    let mut writer: HashMap<(&str, u64), usize> = HashMap::new();
    for (i, t) in txns.iter().enumerate() {
        for (k, v) in appends(t) {
            writer.insert((k.as_str(), v), i);
        }
    }
    // Version orders, and the sanity of every read.
    let mut order: BTreeMap<&str, &Vec<u64>> = BTreeMap::new();
    for t in txns.iter().filter(|t| t.status == Status::Ok) {
        for (k, list) in reads(t) {
            let mut seen = HashSet::new();
            for v in list {
                if !seen.insert(v) {
                    problems.push(format!("duplicate: {v} appears twice in a read of {k}"));
                }
                match writer.get(&(k.as_str(), *v)) {
                    None => problems.push(format!("{k}: read {v}, which nobody appended")),
                    Some(&w) if txns[w].status == Status::Fail => problems.push(format!(
                        "G1a (aborted read): {k} read {v} of a failed transaction"
                    )),
                    _ => {}
                }
            }
            let longest = order.entry(k.as_str()).or_insert(list);
            if list.len() > longest.len() {
                *longest = list;
            }
        }
    }
    for t in txns.iter().filter(|t| t.status == Status::Ok) {
        for (k, list) in reads(t) {
            let longest = order[k.as_str()];
            if !longest.starts_with(list) {
                problems.push(format!(
                    "incompatible order on {k}: {list:?} is not a prefix of {longest:?}"
                ));
            }
        }
    }
    // Lost acknowledged appends: missing from the final read of their key.
    let finals: HashMap<&str, HashSet<u64>> = txns
        .iter()
        .filter(|t| t.process == FINAL_PROCESS && t.status == Status::Ok)
        .flat_map(|t| reads(t).map(|(k, l)| (k.as_str(), l.iter().copied().collect())))
        .collect();
    let mut lost = 0;
    for t in txns
        .iter()
        .filter(|t| t.status == Status::Ok && t.process != FINAL_PROCESS)
    {
        for (k, v) in appends(t) {
            if finals.get(k.as_str()).is_some_and(|f| !f.contains(&v)) {
                lost += 1;
                problems.push(format!(
                    "lost write: acknowledged append of {v} to {k} (at {:.3}s) is not in the final read",
                    t.end as f64 / 1e9
                ));
            }
        }
    }
    let graph = build_graph(&txns, &writer, &order);
    problems.extend(find_cycles(&txns, &graph));
    Verdict::new(
        "append-strict-serializable",
        format!(
            "{} transactions ({} ok) on {} keys, {} final reads, {lost} lost",
            txns.len(),
            txns.iter().filter(|t| t.status == Status::Ok).count(),
            order.len(),
            finals.len()
        ),
        problems,
    )
}

fn build_graph(
    txns: &[&Op],
    writer: &HashMap<(&str, u64), usize>,
    order: &BTreeMap<&str, &Vec<u64>>,
) -> Graph {
    let mut g: Graph = vec![Vec::new(); txns.len()];
    let mut add = |a: usize, b: usize, d: Dep| {
        if a != b {
            g[a].push((b, d));
        }
    };
    for (k, versions) in order {
        for w in versions.windows(2) {
            if let (Some(&a), Some(&b)) = (writer.get(&(k, w[0])), writer.get(&(k, w[1]))) {
                add(a, b, Dep::Ww);
            }
        }
    }
    for (r, t) in txns.iter().enumerate() {
        if t.status != Status::Ok {
            continue;
        }
        for (k, list) in reads(t) {
            if let Some(last) = list.last() {
                if let Some(&w) = writer.get(&(k.as_str(), *last)) {
                    add(w, r, Dep::Wr);
                }
            }
            let versions = order[k.as_str()];
            if let Some(next) = versions.get(list.len()) {
                if let Some(&w) = writer.get(&(k.as_str(), *next)) {
                    add(r, w, Dep::Rw);
                }
            }
        }
    }
    // Real-time edges from each op's frontier: those that completed before it began and
    // after the latest invocation among ops that completed before it began.
    let mut ok: Vec<usize> = (0..txns.len())
        .filter(|&i| txns[i].status == Status::Ok)
        .collect();
    ok.sort_by_key(|&i| txns[i].end);
    let ends: Vec<u64> = ok.iter().map(|&i| txns[i].end).collect();
    let mut max_start = Vec::with_capacity(ok.len());
    let mut m = 0;
    for &i in &ok {
        m = m.max(txns[i].start);
        max_start.push(m);
    }
    for &b in &ok {
        let before = ends.partition_point(|&e| e < txns[b].start);
        if before == 0 {
            continue;
        }
        let barrier = max_start[before - 1];
        for &a in ok[..before].iter().rev() {
            if txns[a].end < barrier {
                break;
            }
            add(a, b, Dep::Rt);
        }
    }
    g
}

/// Tarjan's strongly connected components over the edges `allowed` keeps.
fn sccs(g: &Graph, allowed: &dyn Fn(Dep) -> bool) -> Vec<Vec<usize>> {
    let n = g.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut out = Vec::new();
    let mut next = 0;
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        // Iterative DFS: (node, next edge position).
        let mut work = vec![(root, 0usize)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut pos)) = work.last_mut() {
            if let Some(&(w, d)) = g[v].get(*pos) {
                *pos += 1;
                if !allowed(d) {
                    continue;
                }
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                work.pop();
                if let Some(&(parent, _)) = work.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut comp = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        comp.push(w);
                        if w == v {
                            break;
                        }
                    }
                    if comp.len() > 1 {
                        out.push(comp);
                    }
                }
            }
        }
    }
    out
}

/// A path from `from` to `to` using allowed edges (BFS), as node indexes.
fn path(g: &Graph, from: usize, to: usize, allowed: &dyn Fn(Dep) -> bool) -> Option<Vec<usize>> {
    let mut prev: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([from]);
    prev.insert(from, from);
    while let Some(v) = queue.pop_front() {
        if v == to {
            let mut p = vec![to];
            let mut c = to;
            while c != from {
                c = prev[&c];
                p.push(c);
            }
            p.reverse();
            return Some(p);
        }
        for &(w, d) in &g[v] {
            if allowed(d) && !prev.contains_key(&w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    None
}

fn describe(txns: &[&Op], cycle: &[usize]) -> String {
    cycle
        .iter()
        .map(|&i| {
            let t = txns[i];
            let mops = match &t.call {
                Call::Txn { mops } => mops
                    .iter()
                    .map(|m| match m {
                        Mop::Append { key, value } => format!("append {key} {value}"),
                        Mop::Read { key, list } => format!("read {key} {list:?}"),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => String::new(),
            };
            format!(
                "T{i}[{:.3}s-{:.3}s: {mops}]",
                t.start as f64 / 1e9,
                t.end as f64 / 1e9
            )
        })
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// Classifies the cycles of the graph into anomalies, one sample each per component.
fn find_cycles(txns: &[&Op], g: &Graph) -> Vec<String> {
    let mut problems = Vec::new();
    let ww = |d: Dep| d == Dep::Ww;
    let wwr = |d: Dep| matches!(d, Dep::Ww | Dep::Wr);
    let ser = |d: Dep| d != Dep::Rt;
    let all = |_: Dep| true;
    let sample = |comp: &[usize], allowed: &dyn Fn(Dep) -> bool| -> String {
        let a = comp[0];
        let back = g[a]
            .iter()
            .find(|(w, d)| allowed(*d) && comp.contains(w))
            .and_then(|&(w, _)| path(g, w, a, allowed).map(|p| [vec![a], p].concat()));
        back.map(|c| describe(txns, &c)).unwrap_or_default()
    };
    let mut explained: HashSet<usize> = HashSet::new();
    for comp in sccs(g, &ww) {
        problems.push(format!("G0 (write cycle): {}", sample(&comp, &ww)));
        explained.extend(comp);
    }
    for comp in sccs(g, &wwr) {
        if comp.iter().all(|c| explained.contains(c)) {
            continue;
        }
        problems.push(format!(
            "G1c (circular information flow): {}",
            sample(&comp, &wwr)
        ));
        explained.extend(comp);
    }
    let mut single = 0;
    for comp in sccs(g, &ser) {
        if comp.iter().all(|c| explained.contains(c)) {
            continue;
        }
        let members: HashSet<usize> = comp.iter().copied().collect();
        let mut found = None;
        'outer: for &u in comp.iter().take(200) {
            for &(v, d) in &g[u] {
                if d == Dep::Rw && members.contains(&v) {
                    if let Some(p) = path(g, v, u, &wwr) {
                        found = Some([vec![u], p].concat());
                        break 'outer;
                    }
                }
            }
        }
        match found {
            Some(c) => {
                single += 1;
                problems.push(format!("G-single (read skew): {}", describe(txns, &c)));
            }
            None => problems.push(format!(
                "G2 (anti-dependency cycle): {}",
                sample(&comp, &ser)
            )),
        }
        explained.extend(comp);
    }
    let _ = single;
    for comp in sccs(g, &all) {
        if comp.iter().all(|c| explained.contains(c)) {
            continue;
        }
        problems.push(format!(
            "strict serializability (real-time cycle, e.g. a stale read): {}",
            sample(&comp, &all)
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(start: u64, end: u64, status: Status, mops: Vec<Mop>) -> Entry {
        Entry::Op(Op {
            process: start,
            node: 0,
            call: Call::Txn { mops },
            status,
            start,
            end,
            error: None,
        })
    }
    fn ap(k: &str, v: u64) -> Mop {
        Mop::Append {
            key: k.into(),
            value: v,
        }
    }
    fn rd(k: &str, l: &[u64]) -> Mop {
        Mop::Read {
            key: k.into(),
            list: Some(l.to_vec()),
        }
    }
    fn problems(h: &[Entry]) -> Vec<String> {
        check(h).problems
    }

    #[test]
    fn serial_history_is_valid() {
        let h = vec![
            txn(0, 1, Status::Ok, vec![ap("x", 1), ap("y", 1)]),
            txn(2, 3, Status::Ok, vec![rd("x", &[1]), ap("x", 2)]),
            txn(4, 5, Status::Ok, vec![rd("x", &[1, 2]), rd("y", &[1])]),
        ];
        assert!(problems(&h).is_empty(), "{:?}", problems(&h));
    }

    #[test]
    fn g1c_circular_information_flow_is_found() {
        // T1 appends x1 and reads y seeing T2's append; T2 appends y and reads x seeing T1's.
        let h = vec![
            txn(0, 10, Status::Ok, vec![ap("x", 1), rd("y", &[1])]),
            txn(0, 10, Status::Ok, vec![ap("y", 1), rd("x", &[1])]),
        ];
        assert!(
            problems(&h).iter().any(|p| p.starts_with("G1c")),
            "{:?}",
            problems(&h)
        );
    }

    #[test]
    fn g_single_read_skew_is_found() {
        // T3 sees x after T1 but y before T2, while T2 read T1's x: T3 -rw-> T2 -wr/ww...
        let h = vec![
            txn(0, 10, Status::Ok, vec![ap("x", 1), ap("y", 1)]),
            txn(0, 10, Status::Ok, vec![ap("x", 2), ap("y", 2)]),
            txn(0, 10, Status::Ok, vec![rd("x", &[1, 2]), rd("y", &[1])]),
            txn(11, 12, Status::Ok, vec![rd("y", &[1, 2])]),
        ];
        assert!(
            problems(&h).iter().any(|p| p.starts_with("G-single")),
            "{:?}",
            problems(&h)
        );
    }

    #[test]
    fn g0_write_cycle_is_found() {
        let h = vec![
            txn(0, 10, Status::Ok, vec![ap("x", 1), ap("y", 2)]),
            txn(0, 10, Status::Ok, vec![ap("x", 2), ap("y", 1)]),
            txn(11, 12, Status::Ok, vec![rd("x", &[1, 2]), rd("y", &[1, 2])]),
        ];
        assert!(
            problems(&h).iter().any(|p| p.starts_with("G0")),
            "{:?}",
            problems(&h)
        );
    }

    #[test]
    fn stale_read_breaks_strict_serializability() {
        let h = vec![
            txn(0, 1, Status::Ok, vec![ap("x", 1)]),
            txn(2, 3, Status::Ok, vec![ap("x", 2)]),
            txn(4, 5, Status::Ok, vec![rd("x", &[1])]),
            txn(6, 7, Status::Ok, vec![rd("x", &[1, 2])]),
        ];
        assert!(
            problems(&h)
                .iter()
                .any(|p| p.starts_with("strict serializability")),
            "{:?}",
            problems(&h)
        );
    }

    #[test]
    fn lost_and_aborted_and_incompatible_reads_are_found() {
        let mut fin = txn(20, 21, Status::Ok, vec![rd("x", &[1])]);
        if let Entry::Op(op) = &mut fin {
            op.process = FINAL_PROCESS;
        }
        let h = vec![
            txn(0, 1, Status::Ok, vec![ap("x", 1)]),
            txn(2, 3, Status::Ok, vec![ap("x", 2)]),
            txn(4, 5, Status::Fail, vec![ap("y", 9)]),
            txn(6, 7, Status::Ok, vec![rd("y", &[9])]),
            txn(8, 9, Status::Ok, vec![rd("x", &[2])]),
            fin,
        ];
        let p = problems(&h);
        assert!(p.iter().any(|p| p.starts_with("lost write")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("G1a")), "{p:?}");
        assert!(
            p.iter().any(|p| p.starts_with("incompatible order")),
            "{p:?}"
        );
    }
}
