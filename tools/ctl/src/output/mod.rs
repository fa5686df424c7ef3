//! Every byte kvctl prints for a response: the `simple`, `json`, `fields` and `table`
//! formats of etcdctl (`-w/--write-out`), and the plain notices commands print around them.
//!
//! Commands never format text themselves: they hand a response to [`Printer`] and write the
//! [`Rendered`] result out with [`emit`]. Printers are pure functions of the response, so
//! unit tests compare their output with etcdctl's byte for byte.
//!
//! A format that etcdctl does not support for a response (`-w table` for `get`, `-w fields`
//! for `member add`) is an error *after* the request ran, exactly as in etcdctl.

mod fields;
mod json;
pub mod notices;
mod simple;
pub mod snapshot;
mod table;

use std::io::Write;

use kvstore_proto::etcdserverpb::{
    AlarmResponse, DeleteRangeResponse, HashKvResponse, LeaseGrantResponse, LeaseKeepAliveResponse,
    LeaseLeasesResponse, LeaseRevokeResponse, LeaseTimeToLiveResponse, MemberAddResponse,
    MemberListResponse, MemberPromoteResponse, MemberRemoveResponse, MemberUpdateResponse,
    PutResponse, RangeResponse, StatusResponse, TxnResponse, WatchResponse,
};

use crate::error::{Error, Result};

/// The output format chosen with `-w/--write-out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// etcdctl's default: human-readable lines.
    Simple,
    /// The response as JSON, encoded like etcdctl's (Go `encoding/json` of the protobuf types).
    Json,
    /// `"Field" : value` lines, one per field.
    Fields,
    /// An ASCII table (member list, endpoint status and health only).
    Table,
}

impl Format {
    /// Parses a `--write-out` value; etcdctl's error for anything else.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "simple" => Ok(Self::Simple),
            "json" => Ok(Self::Json),
            "fields" => Ok(Self::Fields),
            "table" => Ok(Self::Table),
            _ => Err(Error::BadFeature("unsupported output format".into())),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Simple => "simple",
            Self::Json => "json",
            Self::Fields => "fields",
            Self::Table => "table",
        }
    }
}

/// Text produced for one response, split by the stream it goes to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Bytes for standard output.
    pub stdout: Vec<u8>,
    /// Bytes for standard error (etcdctl prints some results there, e.g. `endpoint health`).
    pub stderr: Vec<u8>,
}

impl Rendered {
    /// Text for standard output.
    pub fn out(text: impl Into<Vec<u8>>) -> Self {
        Self {
            stdout: text.into(),
            stderr: Vec::new(),
        }
    }

    /// Text for standard error.
    pub fn err(text: impl Into<Vec<u8>>) -> Self {
        Self {
            stdout: Vec::new(),
            stderr: text.into(),
        }
    }

    /// Standard output as text.
    #[cfg(test)]
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Writes rendered text to the process's standard output and error, flushing both so that
/// streaming commands (`watch`, `lease keep-alive`) show each response as it arrives.
pub fn emit(r: &Rendered) -> Result<()> {
    if !r.stdout.is_empty() {
        let mut out = std::io::stdout().lock();
        out.write_all(&r.stdout)?;
        out.flush()?;
    }
    if !r.stderr.is_empty() {
        let mut err = std::io::stderr().lock();
        err.write_all(&r.stderr)?;
        err.flush()?;
    }
    Ok(())
}

/// One endpoint's answer to `endpoint status`.
#[derive(Debug, Clone)]
pub struct EpStatus {
    /// The endpoint as the user gave it (or as the member list reported it with `--cluster`).
    pub endpoint: String,
    /// The member's status.
    pub resp: StatusResponse,
}

/// One endpoint's answer to `endpoint hashkv`.
#[derive(Debug, Clone)]
pub struct EpHashKv {
    /// The endpoint as the user gave it (or as the member list reported it with `--cluster`).
    pub endpoint: String,
    /// The member's hash of its KV history.
    pub resp: HashKvResponse,
}

/// One endpoint's result of `endpoint health`.
#[derive(Debug, Clone)]
pub struct EpHealth {
    /// The endpoint as the user gave it.
    pub endpoint: String,
    /// Whether a linearizable read succeeded.
    pub health: bool,
    /// How long the check took, formatted like Go's `time.Duration`.
    pub took: String,
    /// Why the check failed; empty when healthy.
    pub error: String,
}

/// Formats responses in the format chosen on the command line.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    format: Format,
    /// `--hex`: print keys and values as `\x..` escapes in the simple format.
    hex: bool,
    /// `get --print-value-only`: print values without their keys.
    value_only: bool,
}

impl Printer {
    /// A printer for `format`, printing keys and values in hex when `hex` is set.
    pub fn new(format: Format, hex: bool) -> Self {
        Self {
            format,
            hex,
            value_only: false,
        }
    }

    /// The format this printer writes.
    pub fn format(&self) -> Format {
        self.format
    }

    /// This printer, printing values only (for `get --print-value-only`).
    pub fn values_only(self) -> Self {
        Self {
            value_only: true,
            ..self
        }
    }

    fn unsupported(&self) -> Error {
        Error::BadFeature(format!(
            "{} not supported as output format",
            self.format.name()
        ))
    }

    /// Output of `put`.
    pub fn put(&self, r: &PutResponse) -> Result<Rendered> {
        match self.format {
            Format::Simple => Ok(Rendered::out(self.simple().put(r))),
            Format::Json => Ok(Rendered::out(json::line(json::put(r)))),
            Format::Fields => Ok(Rendered::out(fields::put(r))),
            Format::Table => Err(self.unsupported()),
        }
    }

    /// Output of `get`.
    pub fn get(&self, r: &RangeResponse) -> Result<Rendered> {
        match self.format {
            Format::Simple => Ok(Rendered::out(self.simple().get(r))),
            Format::Json => Ok(Rendered::out(json::line(json::range(r)))),
            Format::Fields => Ok(Rendered::out(fields::get(r))),
            Format::Table => Err(self.unsupported()),
        }
    }

    /// Output of `del`.
    pub fn del(&self, r: &DeleteRangeResponse) -> Result<Rendered> {
        match self.format {
            Format::Simple => Ok(Rendered::out(self.simple().del(r))),
            Format::Json => Ok(Rendered::out(json::line(json::delete(r)))),
            Format::Fields => Ok(Rendered::out(fields::del(r))),
            Format::Table => Err(self.unsupported()),
        }
    }

    /// Output of `txn`.
    pub fn txn(&self, r: &TxnResponse) -> Result<Rendered> {
        match self.format {
            Format::Simple => Ok(Rendered::out(self.simple().txn(r))),
            Format::Json => Ok(Rendered::out(json::line(json::txn(r)))),
            Format::Fields => Ok(Rendered::out(fields::txn(r))),
            Format::Table => Err(self.unsupported()),
        }
    }

    /// Output of one `watch` response (a batch of events, or the cancellation).
    pub fn watch(&self, r: &WatchResponse) -> Result<Rendered> {
        match self.format {
            Format::Simple => Ok(Rendered::out(self.simple().watch(r))),
            Format::Json => Ok(Rendered::out(json::line(json::watch(r)))),
            Format::Fields => Ok(Rendered::out(fields::watch(r))),
            Format::Table => Err(self.unsupported()),
        }
    }

    /// Output of `lease grant`.
    pub fn lease_grant(&self, r: &LeaseGrantResponse) -> Result<Rendered> {
        match self.format {
            Format::Simple => Ok(Rendered::out(simple::lease_grant(r))),
            Format::Json => Ok(Rendered::out(json::line(json::lease_grant(r)))),
            Format::Fields => Ok(Rendered::out(fields::lease_grant(r))),
            Format::Table => Err(self.unsupported()),
        }
    }

    /// Output of `lease revoke` for lease `id`.
    pub fn lease_revoke(&self, id: i64, r: &LeaseRevokeResponse) -> Result<Rendered> {
        match self.format {
            Format::Simple => Ok(Rendered::out(simple::lease_revoke(id))),
            Format::Json => Ok(Rendered::out(json::line(json::lease_revoke(r)))),
            Format::Fields => Ok(Rendered::out(fields::header_only(r.header.as_ref()))),
            Format::Table => Err(self.unsupported()),
        }
    }

    /// Output of one `lease keep-alive` response.
    pub fn lease_keep_alive(&self, r: &LeaseKeepAliveResponse) -> Result<Rendered> {
        match self.format {
            Format::Simple => Ok(Rendered::out(simple::lease_keep_alive(r))),
            Format::Json => Ok(Rendered::out(json::line(json::lease_keep_alive(r)))),
            Format::Fields => Ok(Rendered::out(fields::lease_keep_alive(r))),
            Format::Table => Err(self.unsupported()),
        }
    }

    /// Output of `lease timetolive`; `keys` is whether `--keys` was given.
    pub fn lease_time_to_live(&self, r: &LeaseTimeToLiveResponse, keys: bool) -> Result<Rendered> {
        match self.format {
            Format::Simple => Ok(Rendered::out(simple::lease_time_to_live(r, keys))),
            Format::Json => Ok(Rendered::out(json::line(json::lease_time_to_live(r)))),
            Format::Fields => Ok(Rendered::out(fields::lease_time_to_live(r))),
            Format::Table => Err(self.unsupported()),
        }
    }

    /// Output of `lease list`.
    pub fn lease_list(&self, r: &LeaseLeasesResponse) -> Result<Rendered> {
        match self.format {
            Format::Simple => Ok(Rendered::out(simple::lease_list(r))),
            Format::Json => Ok(Rendered::out(json::line(json::lease_list(r)))),
            Format::Fields => Ok(Rendered::out(fields::lease_list(r))),
            Format::Table => Err(self.unsupported()),
        }
    }

    /// Output of `member list`.
    pub fn member_list(&self, r: &MemberListResponse) -> Result<Rendered> {
        Ok(Rendered::out(match self.format {
            Format::Simple => simple::member_list(r),
            Format::Json => json::line(json::member_list(r)),
            Format::Fields => fields::member_list(r),
            Format::Table => table::member_list(r),
        }))
    }

    /// Output of `member add` (the simple format's environment block is printed by the
    /// command, which needs a second request for it).
    pub fn member_add(&self, r: &MemberAddResponse) -> Result<Rendered> {
        match self.format {
            Format::Simple => Ok(Rendered::out(simple::member_add(r))),
            Format::Json => Ok(Rendered::out(json::line(json::member_add(r)))),
            Format::Fields | Format::Table => Err(self.unsupported()),
        }
    }

    /// Output of `member remove` of member `id`.
    pub fn member_remove(&self, id: u64, r: &MemberRemoveResponse) -> Result<Rendered> {
        let header = r.header.as_ref();
        match self.format {
            Format::Simple => Ok(Rendered::out(simple::member_changed(
                id,
                "removed from",
                header,
            ))),
            Format::Json => Ok(Rendered::out(json::line(json::members_changed(
                header, &r.members,
            )))),
            Format::Fields | Format::Table => Err(self.unsupported()),
        }
    }

    /// Output of `member update` of member `id`.
    pub fn member_update(&self, id: u64, r: &MemberUpdateResponse) -> Result<Rendered> {
        let header = r.header.as_ref();
        match self.format {
            Format::Simple => Ok(Rendered::out(simple::member_changed(
                id,
                "updated in",
                header,
            ))),
            Format::Json => Ok(Rendered::out(json::line(json::members_changed(
                header, &r.members,
            )))),
            Format::Fields | Format::Table => Err(self.unsupported()),
        }
    }

    /// Output of `member promote` of member `id`.
    pub fn member_promote(&self, id: u64, r: &MemberPromoteResponse) -> Result<Rendered> {
        let header = r.header.as_ref();
        match self.format {
            Format::Simple => Ok(Rendered::out(simple::member_changed(
                id,
                "promoted in",
                header,
            ))),
            Format::Json => Ok(Rendered::out(json::line(json::members_changed(
                header, &r.members,
            )))),
            Format::Fields | Format::Table => Err(self.unsupported()),
        }
    }

    /// Output of `endpoint status`.
    pub fn endpoint_status(&self, list: &[EpStatus]) -> Result<Rendered> {
        Ok(Rendered::out(match self.format {
            Format::Simple => simple::endpoint_status(list),
            Format::Json => json::line(json::endpoint_status(list)),
            Format::Fields => fields::endpoint_status(list),
            Format::Table => table::endpoint_status(list),
        }))
    }

    /// Output of `endpoint hashkv`.
    pub fn endpoint_hashkv(&self, list: &[EpHashKv]) -> Result<Rendered> {
        Ok(Rendered::out(match self.format {
            Format::Simple => simple::endpoint_hashkv(list),
            Format::Json => json::line(json::endpoint_hashkv(list)),
            Format::Fields => fields::endpoint_hashkv(list),
            Format::Table => table::endpoint_hashkv(list),
        }))
    }

    /// Output of `endpoint health` (the simple format goes to standard error, as etcdctl's).
    pub fn endpoint_health(&self, list: &[EpHealth]) -> Result<Rendered> {
        Ok(match self.format {
            Format::Simple => Rendered::err(simple::endpoint_health(list)),
            Format::Json => Rendered::out(json::line(json::endpoint_health(list))),
            Format::Fields => Rendered::out(fields::endpoint_health(list)),
            Format::Table => Rendered::out(table::endpoint_health(list)),
        })
    }

    /// Output of `alarm list` and `alarm disarm`.
    pub fn alarm(&self, r: &AlarmResponse) -> Result<Rendered> {
        match self.format {
            Format::Simple => Ok(Rendered::out(simple::alarm(r))),
            Format::Json => Ok(Rendered::out(json::line(json::alarm(r)))),
            Format::Fields => Ok(Rendered::out(fields::alarm(r))),
            Format::Table => Err(self.unsupported()),
        }
    }

    /// Output of `snapshot status` (every format).
    pub fn snapshot_status(&self, s: &snapshot::SnapshotStatus) -> Rendered {
        Rendered::out(snapshot::status(self.format, s))
    }

    fn simple(&self) -> simple::KvPrinter {
        simple::KvPrinter {
            hex: self.hex,
            value_only: self.value_only,
        }
    }
}
