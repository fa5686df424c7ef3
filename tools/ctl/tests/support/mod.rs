//! The harness of `against_etcd`: throwaway etcd servers, running etcdctl and kvctl with
//! the same command against each, and normalizing their output for comparison.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub const ETCD: &str = "/usr/bin/etcd";
pub const ETCDCTL: &str = "/usr/bin/etcdctl";
pub const KVCTL: &str = env!("CARGO_BIN_EXE_kvctl");

/// A throwaway etcd server, killed when dropped.
pub struct Etcd {
    pub child: Child,
    pub client_port: u16,
    pub peer_port: u16,
    pub _data_dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[path = "../../../../kvstore/tests/support/ports.rs"]
mod ports;

/// `n` distinct free loopback ports.
pub fn free_ports(n: usize) -> Vec<u16> {
    (0..n).map(|_| ports::free_port()).collect()
}

impl Etcd {
    pub fn start(client_port: u16, peer_port: u16) -> Etcd {
        let dir = tempfile::tempdir().expect("temporary data dir");
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log file");
        let child = Command::new(ETCD)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("default={peer}")])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        let etcd = Etcd {
            child,
            client_port,
            peer_port,
            _data_dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(ETCDCTL)
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &client, "get", "ready-probe"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return etcd;
            }
            assert!(
                Instant::now() < deadline,
                "etcd on port {client_port} did not become ready"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tool {
    Etcdctl,
    Kvctl,
}

/// One tool, its server, and what the steps so far told about it.
pub struct Side {
    pub tool: Tool,
    pub etcd: Etcd,
    pub cluster_id: u64,
    pub member_id: u64,
    /// Leases granted by steps; the last one is `{LEASE}`.
    pub leases: Vec<i64>,
    /// Members added by steps; the last one is `{MEMBER}`.
    pub members: Vec<u64>,
    /// A revision captured by a step: `{REV}`.
    pub rev: i64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Capture {
    Lease,
    /// The one lease `lease list` shows (one granted by a step that failed to print it).
    LeaseFromList,
    Member,
    Rev,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Run to completion.
    Run,
    /// A command that never ends by itself: read this many stdout lines, then kill it.
    Lines(usize),
    /// `lease keep-alive {LEASE}`: read one line, revoke the lease, then let it finish.
    KeepAliveThenRevoke,
}

/// One command run by both tools.
#[derive(Debug, Clone)]
pub struct Step {
    pub args: Vec<String>,
    pub stdin: Option<String>,
    pub kind: Kind,
    pub capture: Option<Capture>,
    /// Mask the remaining TTL of `lease timetolive`.
    pub mask_ttl: bool,
    /// Do not pass `--endpoints <server>` (the step gives its own).
    pub own_endpoints: bool,
    /// The output lists members, whose order (by ID) depends on the random ID of a member
    /// the test added: compare the lists sorted.
    pub unordered_members: bool,
}

pub fn step(line: &str) -> Step {
    argv(&line.split_whitespace().collect::<Vec<_>>())
}

pub fn argv(args: &[&str]) -> Step {
    Step {
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin: None,
        kind: Kind::Run,
        capture: None,
        mask_ttl: false,
        own_endpoints: false,
        unordered_members: false,
    }
}

impl Step {
    pub fn stdin(mut self, s: &str) -> Self {
        self.stdin = Some(s.to_string());
        self
    }
    pub fn lines(mut self, n: usize) -> Self {
        self.kind = Kind::Lines(n);
        self
    }
    pub fn capture(mut self, c: Capture) -> Self {
        self.capture = Some(c);
        self
    }
    pub fn mask_ttl(mut self) -> Self {
        self.mask_ttl = true;
        self
    }
    pub fn unordered_members(mut self) -> Self {
        self.unordered_members = true;
        self
    }
    pub fn own_endpoints(mut self) -> Self {
        self.own_endpoints = true;
        self
    }
}

/// What one run of a tool produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    /// `None` when the test killed it.
    pub code: Option<i32>,
}

impl Side {
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.etcd.client_port)
    }

    pub fn subst(&self, s: &str, dead_port: u16) -> String {
        s.replace("{REV}", &self.rev.to_string())
            .replace(
                "{LEASE}",
                &format!("{:016x}", self.leases.last().copied().unwrap_or(0)),
            )
            .replace(
                "{MEMBER}",
                &format!("{:x}", self.members.last().copied().unwrap_or(0)),
            )
            .replace("{EP}", &self.endpoint())
            .replace("{DEAD}", &dead_port.to_string())
    }

    pub fn command(&self, step: &Step, dead_port: u16) -> Command {
        let exe = match self.tool {
            Tool::Etcdctl => ETCDCTL,
            Tool::Kvctl => KVCTL,
        };
        let mut cmd = Command::new(exe);
        for (k, _) in std::env::vars() {
            if k.starts_with("ETCDCTL_") || k.starts_with("KVCTL_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("ETCDCTL_API", "3");
        if !step.own_endpoints {
            cmd.args(["--endpoints", &self.endpoint()]);
        }
        cmd.args(step.args.iter().map(|a| self.subst(a, dead_port)));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    pub fn run(&mut self, step: &Step, dead_port: u16) -> Output {
        let mut cmd = self.command(step, dead_port);
        let stdin = step.stdin.as_ref().map(|s| self.subst(s, dead_port));
        let out = match step.kind {
            Kind::Run => run_to_end(&mut cmd, stdin.as_deref()),
            Kind::Lines(n) => run_lines(&mut cmd, stdin.as_deref(), n),
            Kind::KeepAliveThenRevoke => {
                let revoke = self.command(&step_revoke(), dead_port);
                keep_alive_then_revoke(&mut cmd, revoke)
            }
        };
        if let Some(c) = step.capture {
            self.capture(c, &out.stdout);
        }
        out
    }

    pub fn capture(&mut self, c: Capture, out: &str) {
        let number_after = |pat: &str| -> Option<i128> {
            let start = out.find(pat)? + pat.len();
            let digits: String = out[start..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '-')
                .collect();
            digits.parse().ok()
        };
        let hex_after = |pat: &str| -> Option<u64> {
            let start = out.find(pat)? + pat.len();
            let digits: String = out[start..]
                .trim_start()
                .chars()
                .take_while(char::is_ascii_hexdigit)
                .collect();
            u64::from_str_radix(&digits, 16).ok()
        };
        match c {
            Capture::Lease => {
                let id = hex_after("lease ")
                    .map(|v| v as i64)
                    .or_else(|| number_after("\"ID\":").map(|v| v as i64))
                    .or_else(|| number_after("\"ID\" : ").map(|v| v as i64))
                    .unwrap_or_else(|| panic!("no lease ID in {out:?}"));
                self.leases.push(id);
            }
            Capture::LeaseFromList => {
                let id = out
                    .lines()
                    .nth(1)
                    .and_then(|l| u64::from_str_radix(l.trim(), 16).ok())
                    .unwrap_or_else(|| panic!("no lease in {out:?}"));
                self.leases.push(id as i64);
            }
            Capture::Member => {
                let id = hex_after("Member ")
                    .or_else(|| number_after("\"member\":{\"ID\":").map(|v| v as u64))
                    .unwrap_or_else(|| panic!("no member ID in {out:?}"));
                self.members.push(id);
            }
            Capture::Rev => {
                self.rev = number_after("\"revision\":")
                    .unwrap_or_else(|| panic!("no revision in {out:?}"))
                    as i64;
            }
        }
    }

    /// Literal replacements for this side's IDs and ports, longest first. The 16-digit forms are
    /// zero-padded: space-padded (`{:16x}`), an ID below 2^60 took the space before it into the
    /// mask and broke the comma-separated rows around it (1 run in 16). The space-padded form
    /// is masked only after the words etcdctl prints it after (`Member %16x added to cluster
    /// %16x`), so an ID below 2^60 on one side and not the other is not a difference.
    pub fn masks(&self) -> Vec<(String, String)> {
        let padded = |word: &str, id: u64, mask: &str| {
            (format!("{word} {id:16x}"), format!("{word} {mask}"))
        };
        let mut m = vec![
            (
                format!("127.0.0.1:{}", self.etcd.client_port),
                "<EP>".to_string(),
            ),
            (
                format!("127.0.0.1:{}", self.etcd.peer_port),
                "<PEER>".to_string(),
            ),
            padded("cluster", self.cluster_id, "<CLUSTER>"),
            (format!("{:016x}", self.cluster_id), "<CLUSTER>".to_string()),
            (format!("{:x}", self.cluster_id), "<CLUSTER>".to_string()),
            (self.cluster_id.to_string(), "<CLUSTER>".to_string()),
            padded("Member", self.member_id, "<MEMBER>"),
            (format!("{:016x}", self.member_id), "<MEMBER>".to_string()),
            (format!("{:x}", self.member_id), "<MEMBER>".to_string()),
            (self.member_id.to_string(), "<MEMBER>".to_string()),
        ];
        for l in &self.leases {
            m.push((format!("{l:016x}"), "<LEASE>".to_string()));
            m.push((l.to_string(), "<LEASE>".to_string()));
        }
        for id in &self.members {
            m.push(padded("Member", *id, "<NEW_MEMBER>"));
            m.push((format!("{id:016x}"), "<NEW_MEMBER>".to_string()));
            m.push((format!("{id:x}"), "<NEW_MEMBER>".to_string()));
            m.push((id.to_string(), "<NEW_MEMBER>".to_string()));
        }
        m.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        m
    }
}

pub fn step_revoke() -> Step {
    step("lease revoke {LEASE}")
}

pub fn spawn_reader<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

pub fn feed(child: &mut Child, stdin: Option<&str>) -> Option<ChildStdin> {
    let mut pipe = child.stdin.take().expect("stdin pipe");
    if let Some(s) = stdin {
        pipe.write_all(s.as_bytes()).expect("write stdin");
    }
    Some(pipe)
}

pub fn wait_until(child: &mut Child, deadline: Instant) -> Option<i32> {
    loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

pub fn run_to_end(cmd: &mut Command, stdin: Option<&str>) -> Output {
    let mut child = cmd.spawn().expect("spawn");
    drop(feed(&mut child, stdin));
    let out = spawn_reader(child.stdout.take().expect("stdout pipe"));
    let err = spawn_reader(child.stderr.take().expect("stderr pipe"));
    let code = wait_until(&mut child, Instant::now() + Duration::from_secs(30));
    Output {
        stdout: out.join().expect("stdout"),
        stderr: err.join().expect("stderr"),
        code,
    }
}

/// Collects stdout lines on a channel, one message per line (with its newline).
pub fn line_reader<R: Read + Send + 'static>(r: R) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut r = BufReader::new(r);
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

pub fn run_lines(cmd: &mut Command, stdin: Option<&str>, n: usize) -> Output {
    let mut child = cmd.spawn().expect("spawn");
    // Standard input stays open until the end: `watch -i` exits at its end.
    let _stdin = feed(&mut child, stdin);
    let lines = line_reader(child.stdout.take().expect("stdout pipe"));
    let err = spawn_reader(child.stderr.take().expect("stderr pipe"));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut stdout = String::new();
    for _ in 0..n {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => stdout.push_str(&line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(_stdin);
    Output {
        stdout,
        stderr: err.join().expect("stderr"),
        code: None,
    }
}

pub fn keep_alive_then_revoke(cmd: &mut Command, mut revoke: Command) -> Output {
    let mut child = cmd.spawn().expect("spawn");
    drop(feed(&mut child, None));
    let lines = line_reader(child.stdout.take().expect("stdout pipe"));
    let err = spawn_reader(child.stderr.take().expect("stderr pipe"));
    let mut stdout = lines
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_default();
    let revoked = run_to_end(&mut revoke, None);
    assert_eq!(revoked.code, Some(0), "revoke failed: {revoked:?}");
    let code = wait_until(&mut child, Instant::now() + Duration::from_secs(20));
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(1)) {
        stdout.push_str(&line);
    }
    Output {
        stdout,
        stderr: err.join().expect("stderr"),
        code,
    }
}

/// Replaces what follows each occurrence of `prefix` (as long as `keep` accepts the
/// characters) with `<masked>`.
pub fn mask_after(s: &str, prefix: &str, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(prefix) {
        out.push_str(&rest[..i + prefix.len()]);
        rest = &rest[i + prefix.len()..];
        let end = rest.find(|c: char| !keep(c)).unwrap_or(rest.len());
        if end > 0 {
            out.push_str("<masked>");
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

pub fn is_number(c: char) -> bool {
    c.is_ascii_digit() || c == '-'
}

pub fn is_duration(c: char) -> bool {
    c.is_ascii_digit() || ".hmsnuµ".contains(c)
}

/// Trims the padding of table lines (column widths depend on masked values) and masks the
/// columns that hold raft indexes, sizes and durations.
pub fn normalize_tables(s: &str) -> String {
    const MASKED: [&str; 6] = [
        "HASH",
        "DB SIZE",
        "RAFT TERM",
        "RAFT INDEX",
        "RAFT APPLIED INDEX",
        "TOOK",
    ];
    let mut header: Vec<String> = Vec::new();
    let mut out = String::new();
    for line in s.lines() {
        if line.starts_with('+') && line.ends_with('+') {
            out.push_str("+\n");
        } else if line.starts_with('|') && line.ends_with('|') {
            let cells: Vec<String> = line.split('|').map(|c| c.trim().to_string()).collect();
            if header.is_empty() {
                header = cells.clone();
                out.push_str(&cells.join("|"));
            } else {
                let masked: Vec<String> = cells
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let name = header.get(i).map_or("", String::as_str);
                        if MASKED.contains(&name) && !c.is_empty() {
                            "<masked>".to_string()
                        } else {
                            c.clone()
                        }
                    })
                    .collect();
                out.push_str(&masked.join("|"));
            }
            out.push('\n');
        } else {
            header.clear();
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Masks the varying columns of `endpoint status` simple rows (10 comma-separated fields).
pub fn normalize_status_rows(s: &str) -> String {
    let mut out = String::new();
    for line in s.lines() {
        let mut fields: Vec<&str> = line.split(", ").collect();
        if fields.len() == 10 && (fields[4] == "true" || fields[4] == "false") {
            for i in [3, 6, 7, 8] {
                fields[i] = "<masked>";
            }
        }
        // `endpoint hashkv`: `ENDPOINT, HASH` (the two stores' histories differ in lease IDs).
        if fields.len() == 2 && !fields[1].is_empty() && fields[1].chars().all(is_number) {
            fields[1] = "<masked>";
        }
        out.push_str(&fields.join(", "));
        out.push('\n');
    }
    out
}

pub fn normalize(side: &Side, step: &Step, text: &str, is_stderr: bool) -> String {
    let mut s: String = text
        .lines()
        .filter(|l| {
            !(is_stderr && l.starts_with("{\"level\":") && l.contains("\"caller\":\"clientv3/"))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    if !text.ends_with('\n') && !text.is_empty() && s.ends_with('\n') {
        s.pop();
    }
    for (from, to) in side.masks() {
        s = s.replace(&from, &to);
    }
    for p in [
        "\"raft_term\":",
        "\"raftTerm\":",
        "\"raftIndex\":",
        "\"raftAppliedIndex\":",
        "\"dbSize\":",
        "\"dbSizeInUse\":",
        "\"RaftTerm\" : ",
        "\"RaftIndex\" : ",
        "\"RaftAppliedIndex\" : ",
        "\"DBSize\" : ",
        "\"hash\":",
        "\"Hash\" : ",
    ] {
        s = mask_after(&s, p, is_number);
    }
    s = mask_after(&s, "took = ", is_duration);
    s = mask_after(&s, "\"Took\" : ", is_duration);
    s = mask_after(&s, "\"took\":\"", |c| c != '"');
    if step.mask_ttl {
        s = mask_after(&s, "remaining(", is_number);
        s = mask_after(&s, "\"ttl\":", is_number);
        s = mask_after(&s, "\"TTL\" : ", is_number);
    }
    let s = normalize_status_rows(&normalize_tables(&s));
    if step.unordered_members {
        sort_members(&s)
    } else {
        s
    }
}

/// Puts member lists in a canonical order: runs of member rows (simple or table), the
/// elements of JSON `"members"` arrays, and the entries of `ETCD_INITIAL_CLUSTER`.
pub fn sort_members(s: &str) -> String {
    let is_row = |l: &str| {
        l.contains(", started, ")
            || l.contains(", unstarted, ")
            || l.contains("|started|")
            || l.contains("|unstarted|")
    };
    let mut out: Vec<String> = Vec::new();
    let mut run: Vec<String> = Vec::new();
    for line in s.lines() {
        if is_row(line) {
            run.push(line.to_string());
            continue;
        }
        run.sort();
        out.append(&mut run);
        if let Some(list) = line
            .strip_prefix("ETCD_INITIAL_CLUSTER=\"")
            .and_then(|l| l.strip_suffix('"'))
        {
            let mut entries: Vec<&str> = list.split(',').collect();
            entries.sort();
            out.push(format!("ETCD_INITIAL_CLUSTER=\"{}\"", entries.join(",")));
        } else {
            out.push(sort_json_members(line));
        }
    }
    run.sort();
    out.append(&mut run);
    out.iter().map(|l| format!("{l}\n")).collect()
}

pub fn sort_json_members(line: &str) -> String {
    const KEY: &str = "\"members\":[";
    let Some(start) = line.find(KEY).map(|i| i + KEY.len()) else {
        return line.to_string();
    };
    let mut depth = 0;
    let mut elements = Vec::new();
    let mut element_start = start;
    let mut end = line.len();
    for (i, c) in line[start..].char_indices().map(|(i, c)| (i + start, c)) {
        match c {
            '{' | '[' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            ']' if depth > 0 => depth -= 1,
            ']' => {
                elements.push(&line[element_start..i]);
                end = i;
                break;
            }
            ',' if depth == 0 => {
                elements.push(&line[element_start..i]);
                element_start = i + 1;
            }
            _ => {}
        }
    }
    elements.sort();
    format!("{}{}{}", &line[..start], elements.join(","), &line[end..])
}

/// The cluster and member ID of a server, from `member list -w json`.
pub fn ids(endpoint: &str) -> (u64, u64) {
    let out = Command::new(ETCDCTL)
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "member", "list", "-w", "json"])
        .output()
        .expect("etcdctl member list");
    let text = String::from_utf8_lossy(&out.stdout);
    let num = |pat: &str| -> u64 {
        let start = text.find(pat).expect("field in member list") + pat.len();
        text[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .expect("number")
    };
    (num("\"cluster_id\":"), num("\"member_id\":"))
}
