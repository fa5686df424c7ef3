//! `snapshot save | status | restore`: backups of a member, as etcdctl makes them.
//!
//! - `save` streams Maintenance.Snapshot from exactly one endpoint into `<file>.part`, checks
//!   the checksum of a kvstore snapshot as it arrives, fsyncs and renames it to `<file>`
//!   (against etcd, whose snapshot is another format, the bytes are saved as they came).
//! - `status` reads a file whole: etcdctl's hash, revision, total keys and total size, and a
//!   clear error when the file is truncated or corrupted.
//! - `restore` builds, offline, the data directory of one member of a new cluster. kvctl links
//!   the `kvstore` library for it (as etcdctl links etcd's): one binary for the operator, and
//!   the data directory is written by the same code that reads it.
//!
//! One difference from etcdctl 3.4: `save` is not bounded by `--command-timeout` (etcdctl's
//! fails on any store too large to stream within it, 5 s by default); it fails only when no
//! data arrives for that long, or 30 s, whichever is longer.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use kvstore::backup::{self, PartFile, RestoreOptions};
use kvstore_proto::etcdserverpb::SnapshotRequest;

use crate::cli::Context;
use crate::client::{rpc_error, Client, DEADLINE_EXCEEDED};
use crate::error::{Error, Result};
use crate::go;
use crate::output::emit;
use crate::output::snapshot::{restored, saved, SnapshotStatus};

/// Shortest wait for the next chunk of a snapshot being saved.
const MIN_IDLE: Duration = Duration::from_secs(30);

/// `snapshot` and its subcommands.
#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// The subcommand.
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

/// The `snapshot` subcommands.
#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Stores a member's snapshot (one endpoint) to a given file
    Save(FileArgs),
    /// Gets the status (hash, revision, keys, size) of a snapshot file, verifying its checksum
    Status(FileArgs),
    /// Restores a snapshot file into the data directory of a member of a new cluster
    Restore(RestoreArgs),
}

/// The file argument of `save` and `status`.
#[derive(Args, Debug, Clone, Default)]
pub struct FileArgs {
    /// The snapshot file.
    #[arg(value_name = "FILENAME")]
    pub args: Vec<String>,
}

/// Flags of `snapshot restore`: the new member, as it will be started.
#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    /// The snapshot file.
    #[arg(value_name = "FILENAME")]
    pub args: Vec<String>,
    /// Path to the data directory to create [default: <name>.kvstore]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Human-readable name for this member
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Initial cluster configuration for restore bootstrap: name=peer-url,...
    #[arg(long, default_value = "default=http://localhost:2380")]
    pub initial_cluster: String,
    /// Initial cluster token for the new cluster (its IDs derive from it)
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// List of this member's peer URLs to advertise to the rest of the cluster
    #[arg(long, default_value = "http://localhost:2380", value_delimiter = ',')]
    pub initial_advertise_peer_urls: Vec<String>,
    /// Ignore the snapshot's checksum (restore a file whose checksum does not match)
    #[arg(long)]
    pub skip_hash_check: bool,
}

/// Runs a `snapshot` subcommand.
pub async fn run(ctx: &Context, args: SnapshotArgs) -> Result<()> {
    match args.command {
        SnapshotCommand::Save(a) => save(ctx, a).await,
        SnapshotCommand::Status(a) => status(ctx, a),
        SnapshotCommand::Restore(a) => restore(a),
    }
}

/// A progress bar of `total` bytes on standard error (drawn only on a terminal).
fn bar(total: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} ({binary_bytes_per_sec}, {eta})",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// `snapshot save FILE`.
async fn save(ctx: &Context, args: FileArgs) -> Result<()> {
    let [path] = args.args.as_slice() else {
        return Err(Error::BadArgs("snapshot save expects one argument".into()));
    };
    let endpoints = &ctx.settings.endpoints;
    if endpoints.len() != 1 {
        return Err(Error::Interrupted(format!(
            "snapshot must be requested to one selected node, not multiple {}",
            go::string_list(endpoints)
        )));
    }
    let client = Client::connect(&ctx.settings)
        .await
        .map_err(|e| Error::Interrupted(e.0))?;
    let fail = |e: backup::Error| Error::Interrupted(e.to_string());
    let mut part = PartFile::create(Path::new(path)).map_err(fail)?;
    let idle = ctx.settings.command_timeout.max(MIN_IDLE);
    let started = Instant::now();
    let deadline = || Error::Interrupted(DEADLINE_EXCEEDED.into());
    let mut stream = tokio::time::timeout(idle, client.maintenance().snapshot(SnapshotRequest {}))
        .await
        .map_err(|_| deadline())?
        .map_err(|s| Error::Interrupted(rpc_error(&s).0))?
        .into_inner();
    let pb = bar(0, "saving");
    let mut revision = None;
    loop {
        let message = tokio::time::timeout(idle, stream.message())
            .await
            .map_err(|_| deadline())?
            .map_err(|s| Error::Interrupted(rpc_error(&s).0))?;
        let Some(resp) = message else { break };
        if revision.is_none() {
            revision = resp.header.map(|h| h.revision).filter(|r| *r > 0);
        }
        part.write_chunk(&resp.blob).map_err(fail)?;
        pb.set_length(part.len() + resp.remaining_bytes);
        pb.set_position(part.len());
    }
    pb.finish_and_clear();
    let saved_file = part.commit().map_err(fail)?;
    emit(&saved(path, saved_file.size, started.elapsed(), revision))
}

/// Opens a snapshot file for reading with a progress bar; returns the reader and its size.
fn open_with_progress(
    path: &str,
    what: &str,
) -> Result<(BufReader<impl std::io::Read>, u64, ProgressBar)> {
    let file = File::open(path).map_err(|e| Error::Request(format!("open {path}: {e}")))?;
    let size = file
        .metadata()
        .map_err(|e| Error::Request(format!("stat {path}: {e}")))?
        .len();
    let pb = bar(size, what);
    Ok((
        BufReader::with_capacity(1 << 20, pb.wrap_read(file)),
        size,
        pb,
    ))
}

/// `snapshot status FILE`.
fn status(ctx: &Context, args: FileArgs) -> Result<()> {
    let [path] = args.args.as_slice() else {
        return Err(Error::BadArgs(
            "snapshot status requires exactly one argument".into(),
        ));
    };
    let printer = ctx.printer()?;
    let (input, size, pb) = open_with_progress(path, "reading")?;
    let result = backup::status::status_of(input, size);
    pb.finish_and_clear();
    let s = result.map_err(|e| Error::Request(format!("{path}: {e}")))?;
    emit(&printer.snapshot_status(&SnapshotStatus {
        hash: s.hash,
        revision: s.revision,
        total_keys: s.total_keys,
        total_size: s.total_size,
    }))
}

/// `snapshot restore FILE --name ... --data-dir ...`.
fn restore(args: RestoreArgs) -> Result<()> {
    let [path] = args.args.as_slice() else {
        return Err(Error::BadArgs(
            "snapshot restore requires exactly one argument".into(),
        ));
    };
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.kvstore", args.name)));
    let opts = RestoreOptions {
        name: args.name,
        data_dir: data_dir.clone(),
        initial_cluster: args.initial_cluster,
        initial_cluster_token: args.initial_cluster_token,
        initial_advertise_peer_urls: args.initial_advertise_peer_urls,
        skip_hash_check: args.skip_hash_check,
    };
    let started = Instant::now();
    let (input, size, pb) = open_with_progress(path, "restoring")?;
    let result = backup::restore(&opts, input, size);
    pb.finish_and_clear();
    let done = result.map_err(|e| match e {
        backup::Error::Invalid(msg) => {
            Error::Request(format!("{path}: {msg}; nothing was restored"))
        }
        other => Error::Request(other.to_string()),
    })?;
    emit(&restored(
        &data_dir.display().to_string(),
        done.member_id,
        done.cluster_id,
        &done.snapshot,
        started.elapsed(),
    ))
}
