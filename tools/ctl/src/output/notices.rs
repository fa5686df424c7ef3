//! The plain lines commands print around (or instead of) a formatted response, worded as
//! etcdctl words them. They do not depend on `--write-out`, except where etcdctl's do.

use super::Rendered;
use crate::go::quote;

/// `compaction`: printed in every format.
pub fn compacted(rev: i64) -> Rendered {
    Rendered::out(format!("compacted revision {rev}\n"))
}

/// `defrag`, one line per endpoint that succeeded.
pub fn defragmented(endpoint: &str) -> Rendered {
    Rendered::out(format!("Finished defragmenting etcd member[{endpoint}]\n"))
}

/// `move-leader`.
pub fn leadership_transferred(from: u64, to: u64) -> Rendered {
    Rendered::out(format!("Leadership transferred from {from:x} to {to:x}\n"))
}

/// `defrag`, one line per endpoint that failed.
pub fn defrag_failed(endpoint: &str, err: &str) -> Rendered {
    Rendered::err(format!(
        "Failed to defragment etcd member[{endpoint}] ({err})\n"
    ))
}

/// `endpoint status`, one line per endpoint that did not answer.
pub fn status_failed(endpoint: &str, err: &str) -> Rendered {
    Rendered::err(format!(
        "Failed to get the status of endpoint {endpoint} ({err})\n"
    ))
}

/// `endpoint hashkv`: one endpoint could not be asked.
pub fn hashkv_failed(endpoint: &str, err: &str) -> Rendered {
    Rendered::err(format!(
        "Failed to get the hash of endpoint {endpoint} ({err})\n"
    ))
}

/// `watch`: the server cancelled the watch (compaction, or another reason).
pub fn watch_canceled(reason: &str) -> Rendered {
    Rendered::err(format!("watch was canceled ({reason})\n"))
}

/// `watch --progress-notify`: a progress notification at revision `rev` (etcdctl 3.5's line).
pub fn progress_notify(rev: i64) -> Rendered {
    Rendered::out(format!("progress notify: {rev}\n"))
}

/// `watch -i`: a line that is not a usable watch command.
pub fn invalid_watch_command(line: &str, why: &str) -> Rendered {
    Rendered::err(format!("Invalid command {line} ({why})\n"))
}

/// `lease keep-alive` (simple format): the lease is gone and keep-alives stopped.
pub fn lease_expired(id: i64) -> Rendered {
    Rendered::out(format!("lease {id:016x} expired or revoked.\n"))
}

/// `member add` (simple format): the settings to start the new member with.
///
/// `cluster` is `name=peer-url` for every peer URL of every member; `peer_urls` the URLs as
/// the user gave them.
pub fn member_add_env(name: &str, cluster: &[String], peer_urls: &[String]) -> Rendered {
    Rendered::out(format!(
        "\nETCD_NAME={}\nETCD_INITIAL_CLUSTER={}\nETCD_INITIAL_ADVERTISE_PEER_URLS={}\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n",
        quote(name.as_bytes()),
        quote(cluster.join(",").as_bytes()),
        quote(peer_urls.join(",").as_bytes()),
    ))
}

/// `txn -i`: the prompt before each section.
pub fn txn_prompt(section: &str) -> Rendered {
    Rendered::out(format!("{section}\n"))
}

/// `version`.
pub fn version() -> Rendered {
    Rendered::out(format!(
        "kvctl version: {}\nAPI version: 3.4\n",
        env!("CARGO_PKG_VERSION")
    ))
}
