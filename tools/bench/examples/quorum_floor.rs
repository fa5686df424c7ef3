//! The floor of a replicated, durable write on this machine, whatever implements it.
//!
//! A put that etcd (or kvstore) acknowledges has been written and synced on a quorum: with three
//! members, the leader and one follower. The least any implementation can do for it is what
//! this program does, with blocking sockets and no runtime, encoding or state machine:
//!
//! 1. the client sends a 320-byte record to the leader process (woken from `read`);
//! 2. the leader sends it to both follower processes (each woken from `read`), then appends it
//!    to its own preallocated log file and `fdatasync`s it;
//! 3. each follower appends and syncs it the same way and sends back an 8-byte ack, which wakes
//!    a thread of the leader blocked on that follower's socket;
//! 4. whichever leader thread completes the quorum (its own sync and one follower's ack) sends
//!    the answer to the client, straight from that thread (no hand-off to another one).
//!
//! So a write waits for four wake-ups in a row across processes (client → leader → follower →
//! leader → client) and for the slower of two syncs that run at the same time; nothing else.
//! `--no-sync` leaves the syncs out, to see the wake-ups and the loopback alone.
//!
//! Usage: `cargo run --release -p kvbench --example quorum_floor -- [--ops 3000] [--dir DIR] [--no-sync]`
//! (DIR on the disk the members would use; the default is the system's temporary directory).
//! It prints the client's latency percentiles; `docs/benchmarks.md` compares them with the
//! single-client put of both systems.

use std::env;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Bytes of one record: about a put of a 32-byte key and a 256-byte value, with framing.
const RECORD: usize = 320;
/// Bytes each log file is preallocated with (written and synced before the run), so that a
/// sync records the data and not a new file size, as etcd's WAL and kvstore's journal arrange.
const LOG_BYTES: usize = 8 << 20;

fn main() -> io::Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("follower") => follower(&Role::parse(&args[1..])?),
        Some("leader") => leader(&Role::parse(&args[1..])?),
        _ => run(&args),
    }
}

/// What a member process is told: where its log goes, whether it syncs, how many records come,
/// and (the leader) the followers' ports.
struct Role {
    dir: PathBuf,
    sync: bool,
    ops: usize,
    followers: Vec<u16>,
}

impl Role {
    fn args(&self) -> Vec<String> {
        let mut args = vec![
            self.dir.display().to_string(),
            self.sync.to_string(),
            self.ops.to_string(),
        ];
        args.extend(self.followers.iter().map(u16::to_string));
        args
    }

    fn parse(args: &[String]) -> io::Result<Role> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
        let [dir, sync, ops, followers @ ..] = args else {
            return Err(bad("usage: follower|leader DIR SYNC OPS [PORT...]"));
        };
        Ok(Role {
            dir: PathBuf::from(dir),
            sync: sync.parse().map_err(|_| bad("SYNC is true or false"))?,
            ops: ops.parse().map_err(|_| bad("OPS is a number"))?,
            followers: followers
                .iter()
                .map(|p| p.parse().map_err(|_| bad("PORT is a number")))
                .collect::<io::Result<_>>()?,
        })
    }
}

/// An append-only log in a preallocated file.
struct Log {
    file: File,
    offset: u64,
    sync: bool,
}

impl Log {
    fn create(dir: &Path, name: &str, sync: bool) -> io::Result<Log> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.join(name))?;
        file.write_all(&vec![0; LOG_BYTES])?;
        file.sync_all()?;
        Ok(Log {
            file,
            offset: 0,
            sync,
        })
    }

    fn append(&mut self, record: &[u8]) -> io::Result<()> {
        if self.offset + record.len() as u64 > LOG_BYTES as u64 {
            self.offset = 0;
        }
        self.file.write_all_at(record, self.offset)?;
        self.offset += record.len() as u64;
        if self.sync {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

/// Listens on a free loopback port and tells the parent which (one line on stdout).
fn listen() -> io::Result<TcpListener> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut out = io::stdout().lock();
    writeln!(out, "{}", listener.local_addr()?.port())?;
    out.flush()?;
    Ok(listener)
}

fn accept_one(listener: &TcpListener) -> io::Result<TcpStream> {
    let (conn, _) = listener.accept()?;
    conn.set_nodelay(true)?;
    Ok(conn)
}

fn follower(role: &Role) -> io::Result<()> {
    let mut log = Log::create(
        &role.dir,
        &format!("follower-{}.log", std::process::id()),
        role.sync,
    )?;
    let mut leader = accept_one(&listen()?)?;
    let mut record = [0; RECORD];
    while leader.read_exact(&mut record).is_ok() {
        log.append(&record)?;
        leader.write_all(&record[..8])?;
    }
    Ok(())
}

fn leader(role: &Role) -> io::Result<()> {
    let mut log = Log::create(&role.dir, "leader.log", role.sync)?;
    let mut followers = Vec::new();
    for port in &role.followers {
        let conn = TcpStream::connect(("127.0.0.1", *port))?;
        conn.set_nodelay(true)?;
        followers.push(conn);
    }
    let mut client = accept_one(&listen()?)?;
    // Votes per record: the leader's own sync and each follower's ack. The second one completes
    // the quorum, and the thread that casts it answers the client.
    let votes: Arc<Vec<AtomicU8>> = Arc::new((0..role.ops).map(|_| AtomicU8::new(0)).collect());
    let answer = Arc::new(Mutex::new(client.try_clone()?));
    let vote = move |op: u64| -> io::Result<()> {
        let Some(count) = usize::try_from(op).ok().and_then(|i| votes.get(i)) else {
            return Ok(());
        };
        if count.fetch_add(1, Ordering::AcqRel) == 1 {
            let mut client = answer.lock().map_err(|_| io::Error::other("poisoned"))?;
            client.write_all(&op.to_le_bytes())?;
        }
        Ok(())
    };
    for follower in &followers {
        let mut acks = follower.try_clone()?;
        let vote = vote.clone();
        thread::spawn(move || {
            let mut ack = [0; 8];
            while acks.read_exact(&mut ack).is_ok() {
                if vote(u64::from_le_bytes(ack)).is_err() {
                    break;
                }
            }
        });
    }
    let mut record = [0; RECORD];
    while client.read_exact(&mut record).is_ok() {
        for follower in &mut followers {
            follower.write_all(&record)?;
        }
        log.append(&record)?;
        let mut op = [0; 8];
        op.copy_from_slice(&record[..8]);
        vote(u64::from_le_bytes(op))?;
    }
    Ok(())
}

/// Starts a member process of this program and reads the port it listens on.
fn spawn(role: &str, args: &Role) -> io::Result<(Child, u16)> {
    let mut child = Command::new(env::current_exe()?)
        .arg(role)
        .args(args.args())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let port = line
        .trim()
        .parse()
        .map_err(|_| io::Error::other(format!("{role} did not start: {line:?}")))?;
    Ok((child, port))
}

fn run(args: &[String]) -> io::Result<()> {
    let mut ops = 3000;
    let mut dir = env::temp_dir();
    let mut sync = true;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--ops" => ops = args.next().and_then(|n| n.parse().ok()).unwrap_or(ops),
            "--dir" => dir = args.next().map(PathBuf::from).unwrap_or(dir),
            "--no-sync" => sync = false,
            other => {
                eprintln!("unknown argument {other:?}; usage: quorum_floor [--ops N] [--dir DIR] [--no-sync]");
                std::process::exit(2);
            }
        }
    }
    let dir = tempdir_in(&dir)?;
    let mut role = Role {
        dir: dir.clone(),
        sync,
        ops,
        followers: Vec::new(),
    };
    let mut children = Vec::new();
    for _ in 0..2 {
        let (child, port) = spawn("follower", &role)?;
        children.push(child);
        role.followers.push(port);
    }
    let (child, port) = spawn("leader", &role)?;
    children.push(child);
    let result = client(port, ops);
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut latencies = result?;
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    let total: Duration = latencies.iter().sum();
    println!(
        "{ops} writes ({}): {:.0}/s, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        if sync {
            "synced on a quorum"
        } else {
            "no sync"
        },
        ops as f64 / total.as_secs_f64(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0),
    );
    Ok(())
}

/// Sends `ops` records one after the other, each once the previous one was answered.
fn client(port: u16, ops: usize) -> io::Result<Vec<Duration>> {
    let mut leader = TcpStream::connect(("127.0.0.1", port))?;
    leader.set_nodelay(true)?;
    let mut record = [7; RECORD];
    let mut answer = [0; 8];
    let mut latencies = Vec::with_capacity(ops);
    for op in 0..ops as u64 {
        record[..8].copy_from_slice(&op.to_le_bytes());
        let started = Instant::now();
        leader.write_all(&record)?;
        leader.read_exact(&mut answer)?;
        latencies.push(started.elapsed());
        if answer != op.to_le_bytes() {
            return Err(io::Error::other(format!("answer for {answer:?}, not {op}")));
        }
    }
    Ok(latencies)
}

/// A fresh directory under `parent` for this run's logs.
fn tempdir_in(parent: &Path) -> io::Result<PathBuf> {
    let dir = parent.join(format!("quorum-floor-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
