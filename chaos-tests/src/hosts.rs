//! Hosts: where members and clients live, and the network faults between them.
//!
//! In [`Mode::Namespaces`] every member gets its own Linux network namespace with one veth
//! interface (`eth0`, `10.77.0.{11+i}/24`), plugged into a bridge that lives in a namespace of
//! its own; the workload clients get one more namespace (`10.77.0.2`). No namespace has a
//! default route and the root namespace has no interface on the bridge, so a packet for a test
//! address can go nowhere but the bridge. The harness thread that runs the clients enters the
//! client namespace ([`Hosts::enter_client_namespace`]) and checks it did before any
//! connection is made.
//!
//! Partitions are blackhole routes inside the member namespaces (this kernel has neither
//! iptables/nft binaries nor tc classifiers, and no `netem`); bandwidth limits are `tbf`
//! qdiscs, whose small queue also drops packets when a link is saturated.
//!
//! [`Mode::Loopback`] (not root, or no `ip netns`) runs members on 127.0.0.1 with distinct
//! ports: process faults only.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Error, Result};

/// The prefix of every namespace this harness creates; leftovers of crashed runs are found by it.
pub const PREFIX: &str = "kxchaos";
/// The test subnet, only ever configured inside the harness's namespaces.
pub const SUBNET: &str = "10.77.0.0/24";

/// Whether members are isolated in namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One network namespace per member and one for the clients: network faults available.
    Namespaces,
    /// Everything on 127.0.0.1: process faults only.
    Loopback,
}

/// The hosts of one run; tears its namespaces down when dropped.
#[derive(Debug)]
pub struct Hosts {
    /// Namespaces or loopback.
    pub mode: Mode,
    /// `kxchaos-<pid>-<seq>`: unique per run in this process.
    run: String,
    /// Number of member hosts.
    nodes: usize,
    /// Client and peer ports per member in loopback mode (free when set up).
    loopback_ports: Vec<(u16, u16)>,
    /// Blackhole routes installed: (from member, to member).
    blocked: parking_lot::Mutex<BTreeSet<(usize, usize)>>,
    /// Set once the namespaces are deleted.
    torn_down: std::sync::atomic::AtomicBool,
}

static RUN_SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs `ip` with `args`; an error names the command and its stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    run_tool("ip", args)
}

/// Runs a tool to completion, returning stdout.
fn run_tool(tool: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Host(format!("{tool} {}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(Error::Host(format!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether network namespaces can be used here: root, `ip netns` works.
pub fn namespaces_available() -> bool {
    rustix::process::geteuid().is_root() && ip(&["netns", "list"]).is_ok()
}

/// Deletes namespaces left by runs whose process is gone (crash, SIGKILL).
pub fn cleanup_leftovers() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        // A dead run's pid is gone, or a zombie (empty cmdline) if nobody reaped it.
        let alive = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty());
        if !alive {
            // Members orphaned by the crashed run still hold the namespace: kill them first.
            let pids = ip(&["netns", "pids", name]).unwrap_or_default();
            for p in pids.split_whitespace() {
                let _ = run_tool("kill", &["-9", p]);
            }
            let _ = ip(&["netns", "del", name]);
        }
    }
}

impl Hosts {
    /// Sets up hosts for `nodes` members: namespaces if `namespaces`, else loopback.
    pub fn setup(nodes: usize, namespaces: bool) -> Result<Self> {
        let seq = RUN_SEQ.fetch_add(1, Ordering::SeqCst);
        let run = format!("{PREFIX}-{}-{seq}", std::process::id());
        let loopback_ports = if namespaces {
            Vec::new()
        } else {
            free_ports(nodes)?
        };
        let hosts = Self {
            mode: if namespaces {
                Mode::Namespaces
            } else {
                Mode::Loopback
            },
            run,
            nodes,
            loopback_ports,
            blocked: parking_lot::Mutex::new(BTreeSet::new()),
            torn_down: false.into(),
        };
        if namespaces {
            cleanup_leftovers();
            check_root_namespace()?;
            hosts.create_namespaces()?;
        }
        Ok(hosts)
    }

    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.run)
    }

    /// The namespace of member `i`.
    pub fn member_ns(&self, i: usize) -> String {
        self.ns(&format!("n{i}"))
    }

    fn client_ns(&self) -> String {
        self.ns("cl")
    }

    fn create_namespaces(&self) -> Result<()> {
        let br = self.ns("br");
        ip(&["netns", "add", &br])?;
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        let mut hosts: Vec<(String, String, String)> = (0..self.nodes)
            .map(|i| (self.member_ns(i), format!("v{i}"), self.member_ip(i)))
            .collect();
        hosts.push((self.client_ns(), "vc".into(), "10.77.0.2".into()));
        for (ns, veth, addr) in &hosts {
            ip(&["netns", "add", ns])?;
            ip(&[
                "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", veth, "netns", &br,
            ])?;
            ip(&["-n", &br, "link", "set", veth, "master", "br0", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            let default = ip(&["-n", ns, "route", "show", "default"])?;
            if !default.trim().is_empty() {
                return Err(Error::Host(format!("namespace {ns} has a default route")));
            }
        }
        Ok(())
    }

    /// The address members bind and advertise.
    pub fn member_ip(&self, i: usize) -> String {
        match self.mode {
            Mode::Namespaces => format!("10.77.0.{}", 11 + i),
            Mode::Loopback => "127.0.0.1".into(),
        }
    }

    /// Client and peer ports of member `i`.
    pub fn ports(&self, i: usize) -> (u16, u16) {
        match self.mode {
            Mode::Namespaces => (2379, 2380),
            Mode::Loopback => self.loopback_ports[i],
        }
    }

    /// A command that runs `program` on member `i`'s host. `ip netns exec` execs the program
    /// in place, so the child's pid is the program's.
    pub fn command(&self, i: usize, program: &std::path::Path) -> Command {
        match self.mode {
            Mode::Namespaces => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &self.member_ns(i)]).arg(program);
                cmd
            }
            Mode::Loopback => Command::new(program),
        }
    }

    /// Moves the calling thread into the client namespace and checks that it is no longer in
    /// the root namespace. Threads it spawns inherit the namespace.
    pub fn enter_client_namespace(&self) -> Result<()> {
        if self.mode == Mode::Loopback {
            return Ok(());
        }
        let path = format!("/var/run/netns/{}", self.client_ns());
        let file = std::fs::File::open(&path).map_err(|e| Error::Host(format!("{path}: {e}")))?;
        use std::os::fd::AsFd;
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| Error::Host(format!("setns {path}: {e}")))?;
        let thread_ns = netns_inode("/proc/thread-self/ns/net")?;
        // /proc/self is the main thread, which never leaves the root namespace.
        let root_ns = netns_inode("/proc/self/ns/net")?;
        let client = std::fs::metadata(&path)
            .map_err(|e| Error::Host(format!("{path}: {e}")))?
            .ino();
        if thread_ns == root_ns || thread_ns != client {
            return Err(Error::Host(
                "refusing to start: the client thread is not inside the client namespace".into(),
            ));
        }
        Ok(())
    }

    /// Drops every packet between the groups (members not named keep all links).
    pub fn partition(&self, groups: &[Vec<usize>]) -> Result<()> {
        let mut pairs = Vec::new();
        for (gi, a) in groups.iter().enumerate() {
            for (gj, b) in groups.iter().enumerate() {
                if gi != gj {
                    for &x in a {
                        for &y in b {
                            pairs.push((x, y));
                        }
                    }
                }
            }
        }
        self.block(&pairs)
    }

    /// Drops packets from each `(a, b)` to `b` at `a` (one direction).
    pub fn block(&self, pairs: &[(usize, usize)]) -> Result<()> {
        if self.mode == Mode::Loopback {
            return Err(Error::Unsupported(
                "network faults need namespaces (run as root)".into(),
            ));
        }
        let mut blocked = self.blocked.lock();
        for &(a, b) in pairs {
            if blocked.insert((a, b)) {
                let dst = format!("{}/32", self.member_ip(b));
                ip(&["-n", &self.member_ns(a), "route", "add", "blackhole", &dst])?;
            }
        }
        Ok(())
    }

    /// Removes the blocks of `pairs`.
    pub fn unblock(&self, pairs: &[(usize, usize)]) -> Result<()> {
        let mut blocked = self.blocked.lock();
        for &(a, b) in pairs {
            if blocked.remove(&(a, b)) {
                let dst = format!("{}/32", self.member_ip(b));
                ip(&["-n", &self.member_ns(a), "route", "del", "blackhole", &dst])?;
            }
        }
        Ok(())
    }

    /// Removes every block.
    pub fn heal_network(&self) -> Result<()> {
        let pairs: Vec<_> = self.blocked.lock().iter().copied().collect();
        self.unblock(&pairs)
    }

    /// Limits member `i`'s outgoing bandwidth with a token bucket (`None` removes it).
    pub fn set_bandwidth(&self, i: usize, rate: Option<&str>) -> Result<()> {
        if self.mode == Mode::Loopback {
            return Err(Error::Unsupported(
                "network faults need namespaces (run as root)".into(),
            ));
        }
        let ns = self.member_ns(i);
        match rate {
            Some(rate) => ip_netns_tc(
                &ns,
                &[
                    "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", rate, "burst",
                    "16kb", "latency", "100ms",
                ],
            ),
            None => ip_netns_tc(&ns, &["qdisc", "del", "dev", "eth0", "root"]).or(Ok(())),
        }
    }

    /// Deletes every namespace of this run (idempotent).
    pub fn teardown(&self) {
        if self.mode == Mode::Loopback || self.torn_down.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut names: Vec<String> = (0..self.nodes).map(|i| self.member_ns(i)).collect();
        names.push(self.client_ns());
        names.push(self.ns("br"));
        for name in names {
            let _ = ip(&["netns", "del", &name]);
        }
    }

    /// Number of member hosts.
    pub fn nodes(&self) -> usize {
        self.nodes
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Pairs of ports the kernel just handed out as free (bound at once, then released).
fn free_ports(nodes: usize) -> Result<Vec<(u16, u16)>> {
    let listeners = (0..2 * nodes)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let ports = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok(ports.chunks(2).map(|c| (c[0], c[1])).collect())
}

fn ip_netns_tc(ns: &str, args: &[&str]) -> Result<()> {
    let mut full = vec!["netns", "exec", ns, "tc"];
    full.extend_from_slice(args);
    ip(&full).map(|_| ())
}

fn netns_inode(path: &str) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .map_err(|e| Error::Host(format!("{path}: {e}")))?
        .ino())
}

/// Refuses to start if the root namespace already has an address or a route inside the test
/// subnet: then a test address would be reachable (or shadowed) from outside the harness's
/// namespaces.
fn check_root_namespace() -> Result<()> {
    let addrs = ip(&["-o", "addr", "show"])?;
    let routes = ip(&["route", "show", "match", "10.77.0.1/32"])?;
    let conflicting = addrs.lines().any(|l| l.contains(" 10.77.0."))
        || routes
            .lines()
            .any(|l| !l.starts_with("default") && !l.trim().is_empty());
    if conflicting {
        return Err(Error::Host(format!(
            "refusing to start: the root namespace has an address or route in {SUBNET}"
        )));
    }
    Ok(())
}
