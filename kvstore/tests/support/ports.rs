//! Ports for test members. Included with `#[path]` by the test support modules, also those of
//! the apiserver, kvctl and kvbench tests.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// The ports handed out: below the kernel's ephemeral range (`ip_local_port_range` starts at
/// 32768), so no outgoing connection can take one between [`free_port`] and the member's bind.
/// Asking the kernel for port 0 instead returns an ephemeral port, which the many connections
/// of tests running alongside could take first ("Address already in use").
const FIRST: u32 = 20_000;
const COUNT: u32 = 12_000;

/// A port nothing listens on now, not handed out before by this process. Tests of one binary
/// run in parallel, so calls take the next port of one sequence; each process starts its
/// sequence at its own offset, so binaries running side by side rarely meet.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id().wrapping_mul(7919) % COUNT;
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(FIRST + (offset + n) % COUNT).expect("ports fit in u16");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT);
}
