//! `put`, `get` and `del`: their flags, and how flags and arguments become requests.
//!
//! The request builders are shared with `txn`, whose success and failure lines are `put`,
//! `get` and `del` command lines; like etcdctl's, they check arguments in etcdctl's order
//! and fail with its messages.

use std::ffi::{OsStr, OsString};
use std::io::Read;

use clap::Args;
use kvstore_proto::etcdserverpb::{
    range_request::{SortOrder, SortTarget},
    DeleteRangeRequest, PutRequest, RangeRequest,
};

use crate::cli::Context;
use crate::error::{Error, Result};
use crate::go;
use crate::output::{emit, Format};

/// Flags and arguments of `put`.
#[derive(Args, Debug, Clone, Default)]
#[command(after_help = "\
When <value> begins with '-', it is read as a flag: insert '--' first \
(put <key> -- <value>, or put -- <key> <value>).\n\
If <value> is not given and --ignore-value is not set, the value is read from standard \
input (cat file | kvctl put <key>).")]
pub struct PutArgs {
    /// The key to write, then its value (read from standard input when omitted).
    #[arg(value_name = "KEY [VALUE]")]
    pub args: Vec<OsString>,
    /// Lease ID (in hexadecimal) to attach to the key; 0 for none.
    #[arg(long, default_value = "0", value_name = "ID")]
    pub lease: String,
    /// Return the previous key-value pair before modification.
    #[arg(long)]
    pub prev_kv: bool,
    /// Update the key using its current value (give no value).
    #[arg(long)]
    pub ignore_value: bool,
    /// Update the key using its current lease.
    #[arg(long)]
    pub ignore_lease: bool,
}

/// Flags and arguments of `get`.
#[derive(Args, Debug, Clone)]
pub struct GetArgs {
    /// The key, and optionally the end of the range [key, range_end) to read.
    #[arg(value_name = "KEY [RANGE_END]")]
    pub args: Vec<OsString>,
    /// Linearizable (l) or serializable (s) read.
    #[arg(long, default_value = "l", value_name = "l|s")]
    pub consistency: String,
    /// Get keys that are greater than or equal to the given key, by byte compare.
    #[arg(long)]
    pub from_key: bool,
    /// Get only the keys, not the values.
    #[arg(long)]
    pub keys_only: bool,
    /// Get only the number of keys in the range (with `-w fields`).
    #[arg(long)]
    pub count_only: bool,
    /// Maximum number of results; 0 for no limit.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub limit: i64,
    /// Order of results: ASCEND or DESCEND (ascending by default).
    #[arg(long, default_value = "", hide_default_value = true)]
    pub order: String,
    /// Get keys with matching prefix.
    #[arg(long)]
    pub prefix: bool,
    /// Only write values when using the "simple" output format.
    #[arg(long)]
    pub print_value_only: bool,
    /// Read at this revision; 0 for the latest.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub rev: i64,
    /// Sort target: CREATE, KEY, MODIFY, VALUE or VERSION.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub sort_by: String,
}

impl Default for GetArgs {
    /// The flags' defaults (a linearizable read of nothing).
    fn default() -> Self {
        Self {
            args: Vec::new(),
            consistency: "l".into(),
            from_key: false,
            keys_only: false,
            count_only: false,
            limit: 0,
            order: String::new(),
            prefix: false,
            print_value_only: false,
            rev: 0,
            sort_by: String::new(),
        }
    }
}

/// Flags and arguments of `del`.
#[derive(Args, Debug, Clone, Default)]
pub struct DelArgs {
    /// The key, and optionally the end of the range [key, range_end) to delete.
    #[arg(value_name = "KEY [RANGE_END]")]
    pub args: Vec<OsString>,
    /// Delete keys with matching prefix.
    #[arg(long)]
    pub prefix: bool,
    /// Return the deleted key-value pairs.
    #[arg(long)]
    pub prev_kv: bool,
    /// Delete keys that are greater than or equal to the given key, by byte compare.
    #[arg(long)]
    pub from_key: bool,
}

fn bytes(s: &OsStr) -> Vec<u8> {
    s.as_encoded_bytes().to_vec()
}

/// The end of the range holding every key that starts with `key`: `key` with its last
/// byte below 0xff incremented and what follows dropped. When every byte is 0xff (or `key`
/// is empty) no such key exists and the range is open-ended: `"\0"`, i.e. all keys ≥ `key`.
pub fn prefix_range_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Applies `--prefix` / `--from-key` to a key, as clientv3's `WithPrefix` and `WithFromKey`
/// do: an empty key means every key (`"\0"` to `"\0"`).
fn apply_range_flags(key: &mut Vec<u8>, range_end: &mut Vec<u8>, prefix: bool, from_key: bool) {
    if prefix {
        if key.is_empty() {
            *key = vec![0];
            *range_end = vec![0];
        } else {
            *range_end = prefix_range_end(key);
        }
    }
    if from_key {
        if key.is_empty() {
            *key = vec![0];
        }
        *range_end = vec![0];
    }
}

const PUT_USAGE: &str = "put command needs 1 argument and input from stdin or 2 arguments";

/// Builds the request of `put` (etcdctl's `getPutOp`), reading the value from `stdin` when
/// it is not an argument.
pub fn put_request(args: &PutArgs, stdin: &mut dyn Read) -> Result<PutRequest> {
    let Some(key) = args.args.first() else {
        return Err(Error::BadArgs(PUT_USAGE.into()));
    };
    if args.ignore_value && args.args.len() > 1 {
        return Err(Error::BadArgs(
            "put command needs only 1 argument when 'ignore-value' is set".into(),
        ));
    }
    let mut value = Vec::new();
    if !args.ignore_value {
        if let Some(v) = args.args.get(1) {
            value = bytes(v);
        } else if stdin.read_to_end(&mut value).is_err() || value.is_empty() {
            return Err(Error::BadArgs(PUT_USAGE.into()));
        }
    }
    let lease = go::parse_int(&args.lease, 16)
        .map_err(|e| Error::BadArgs(format!("bad lease ID ({e}), expecting ID in Hex")))?;
    Ok(PutRequest {
        key: bytes(key),
        value,
        lease,
        prev_kv: args.prev_kv,
        ignore_value: args.ignore_value,
        ignore_lease: args.ignore_lease,
    })
}

/// Builds the request of `get` (etcdctl's `getGetOp`).
pub fn range_request(args: &GetArgs) -> Result<RangeRequest> {
    let Some(key) = args.args.first() else {
        return Err(Error::BadArgs(
            "get command needs one argument as key and an optional argument as range_end".into(),
        ));
    };
    if args.prefix && args.from_key {
        return Err(Error::BadArgs(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one".into(),
        ));
    }
    if args.keys_only && args.count_only {
        return Err(Error::BadArgs(
            "`--keys-only` and `--count-only` cannot be set at the same time, choose one".into(),
        ));
    }
    let serializable = match args.consistency.as_str() {
        "s" => true,
        "l" => false,
        other => {
            return Err(Error::BadFeature(format!(
                "unknown consistency flag {}",
                go::quote(other.as_bytes())
            )))
        }
    };
    let mut key = bytes(key);
    let mut range_end = Vec::new();
    if let Some(end) = args.args.get(1) {
        if args.prefix || args.from_key {
            return Err(too_many_range_args());
        }
        range_end = bytes(end);
    }
    let mut order = match args.order.to_uppercase().as_str() {
        "ASCEND" => SortOrder::Ascend,
        "DESCEND" => SortOrder::Descend,
        "" => SortOrder::None,
        _ => return Err(Error::BadFeature(format!("bad sort order {}", args.order))),
    };
    let target = match args.sort_by.to_uppercase().as_str() {
        "CREATE" => SortTarget::Create,
        "KEY" | "" => SortTarget::Key,
        "MODIFY" => SortTarget::Mod,
        "VALUE" => SortTarget::Value,
        "VERSION" => SortTarget::Version,
        _ => {
            return Err(Error::BadFeature(format!(
                "bad sort target {}",
                args.sort_by
            )))
        }
    };
    // Keys come back in ascending key order anyway; asking for it would make the server
    // fetch the whole range to sort it (clientv3's WithSort does the same).
    if target == SortTarget::Key && order == SortOrder::Ascend {
        order = SortOrder::None;
    }
    apply_range_flags(&mut key, &mut range_end, args.prefix, args.from_key);
    Ok(RangeRequest {
        key,
        range_end,
        limit: args.limit,
        revision: args.rev.max(0),
        sort_order: order as i32,
        sort_target: target as i32,
        serializable,
        keys_only: args.keys_only,
        count_only: args.count_only,
        ..Default::default()
    })
}

/// Builds the request of `del` (etcdctl's `getDelOp`).
pub fn delete_request(args: &DelArgs) -> Result<DeleteRangeRequest> {
    if args.args.is_empty() || args.args.len() > 2 {
        return Err(Error::BadArgs(
            "del command needs one argument as key and an optional argument as range_end".into(),
        ));
    }
    if args.prefix && args.from_key {
        return Err(Error::BadArgs(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one".into(),
        ));
    }
    let mut key = bytes(&args.args[0]);
    let mut range_end = Vec::new();
    if let Some(end) = args.args.get(1) {
        if args.prefix || args.from_key {
            return Err(too_many_range_args());
        }
        range_end = bytes(end);
    }
    apply_range_flags(&mut key, &mut range_end, args.prefix, args.from_key);
    Ok(DeleteRangeRequest {
        key,
        range_end,
        prev_kv: args.prev_kv,
    })
}

fn too_many_range_args() -> Error {
    Error::BadArgs(
        "too many arguments, only accept one argument when `--prefix` or `--from-key` is set"
            .into(),
    )
}

/// `put`.
pub async fn put(ctx: &Context, args: PutArgs) -> Result<()> {
    let req = put_request(&args, &mut std::io::stdin().lock())?;
    let (client, printer) = ctx.connect().await?;
    let resp = client.unary(client.kv().put(req)).await?;
    emit(&printer.put(&resp)?)
}

/// `get`.
pub async fn get(ctx: &Context, args: GetArgs) -> Result<()> {
    let req = range_request(&args)?;
    let (client, mut printer) = ctx.connect().await?;
    let resp = client.unary(client.kv().range(req)).await?;
    if args.count_only && printer.format() != Format::Fields {
        return Err(Error::BadArgs(
            "--count-only is only for `--write-out=fields`".into(),
        ));
    }
    if args.print_value_only {
        if printer.format() != Format::Simple {
            return Err(Error::BadArgs(
                "print-value-only is only for `--write-out=simple`".into(),
            ));
        }
        printer = printer.values_only();
    }
    emit(&printer.get(&resp)?)
}

/// `del`.
pub async fn del(ctx: &Context, args: DelArgs) -> Result<()> {
    let req = delete_request(&args)?;
    let (client, printer) = ctx.connect().await?;
    let resp = client.unary(client.kv().delete_range(req)).await?;
    emit(&printer.del(&resp)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn prefix_end_increments_last_byte_below_ff() {
        assert_eq!(prefix_range_end(b"foo"), b"fop".to_vec());
        assert_eq!(prefix_range_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_range_end(b"a\xff\xff"), b"b".to_vec());
        assert_eq!(prefix_range_end(b"\x00"), b"\x01".to_vec());
    }

    #[test]
    fn prefix_end_of_all_ff_key_is_open_ended() {
        assert_eq!(prefix_range_end(b"\xff"), vec![0]);
        assert_eq!(prefix_range_end(b"\xff\xff\xff"), vec![0]);
        assert_eq!(prefix_range_end(b""), vec![0]);
    }

    #[test]
    fn get_prefix_and_from_key_set_range_end() {
        let r = range_request(&GetArgs {
            args: os(&["p/"]),
            prefix: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!((r.key, r.range_end), (b"p/".to_vec(), b"p0".to_vec()));
        let r = range_request(&GetArgs {
            args: os(&[""]),
            prefix: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!((r.key, r.range_end), (vec![0], vec![0]));
        let r = range_request(&GetArgs {
            args: os(&["b"]),
            from_key: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!((r.key, r.range_end), (b"b".to_vec(), vec![0]));
        let r = range_request(&GetArgs {
            args: os(&["a", "c"]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((r.key, r.range_end), (b"a".to_vec(), b"c".to_vec()));
    }

    #[test]
    fn get_flags_map_to_request_fields() {
        let r = range_request(&GetArgs {
            args: os(&["k"]),
            consistency: "s".into(),
            limit: 2,
            rev: 7,
            keys_only: true,
            sort_by: "modify".into(),
            order: "descend".into(),
            ..Default::default()
        })
        .unwrap();
        assert!(r.serializable && r.keys_only && !r.count_only);
        assert_eq!((r.limit, r.revision), (2, 7));
        assert_eq!(r.sort_target, SortTarget::Mod as i32);
        assert_eq!(r.sort_order, SortOrder::Descend as i32);
        // Ascending by key is the server's natural order: no sort is requested.
        let r = range_request(&GetArgs {
            args: os(&["k"]),
            consistency: "l".into(),
            order: "ASCEND".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.sort_order, SortOrder::None as i32);
        let r = range_request(&GetArgs {
            args: os(&["k"]),
            consistency: "l".into(),
            rev: -1,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.revision, 0);
    }

    #[test]
    fn get_rejects_bad_arguments_with_etcdctl_messages_and_codes() {
        let base = GetArgs {
            consistency: "l".into(),
            ..Default::default()
        };
        let err = range_request(&base).unwrap_err();
        assert_eq!(err.exit_code(), 128);
        assert_eq!(
            err.to_string(),
            "get command needs one argument as key and an optional argument as range_end"
        );
        let err = range_request(&GetArgs {
            args: os(&["k"]),
            sort_by: "FOO".into(),
            ..base.clone()
        })
        .unwrap_err();
        assert_eq!(
            (err.exit_code(), err.to_string()),
            (4, "bad sort target FOO".into())
        );
        let err = range_request(&GetArgs {
            args: os(&["k"]),
            consistency: "q".into(),
            ..base.clone()
        })
        .unwrap_err();
        assert_eq!(
            (err.exit_code(), err.to_string()),
            (4, "unknown consistency flag \"q\"".into())
        );
        let err = range_request(&GetArgs {
            args: os(&["a", "b"]),
            prefix: true,
            ..base.clone()
        })
        .unwrap_err();
        assert_eq!(err.exit_code(), 128);
        let err = range_request(&GetArgs {
            args: os(&["a"]),
            prefix: true,
            from_key: true,
            ..base
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`--prefix` and `--from-key` cannot be set at the same time, choose one"
        );
    }

    #[test]
    fn count_only_asks_for_the_count_and_excludes_keys_only() {
        let r = range_request(&GetArgs {
            args: os(&["p/"]),
            prefix: true,
            count_only: true,
            ..Default::default()
        })
        .unwrap();
        assert!(r.count_only && !r.keys_only);
        let err = range_request(&GetArgs {
            args: os(&["p/"]),
            keys_only: true,
            count_only: true,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            (err.exit_code(), err.to_string()),
            (
                128,
                "`--keys-only` and `--count-only` cannot be set at the same time, choose one"
                    .into()
            )
        );
    }

    #[test]
    fn put_reads_value_from_stdin_when_missing() {
        let args = PutArgs {
            args: os(&["k"]),
            lease: "0".into(),
            ..Default::default()
        };
        let r = put_request(&args, &mut &b"from stdin\n"[..]).unwrap();
        assert_eq!((r.key, r.value), (b"k".to_vec(), b"from stdin\n".to_vec()));
        let err = put_request(&args, &mut &b""[..]).unwrap_err();
        assert_eq!(
            (err.exit_code(), err.to_string()),
            (128, PUT_USAGE.to_string())
        );
    }

    #[test]
    fn put_parses_hex_lease_and_flags() {
        let args = PutArgs {
            args: os(&["k", "v"]),
            lease: "694d5765fc71500b".into(),
            prev_kv: true,
            ignore_lease: true,
            ..Default::default()
        };
        let r = put_request(&args, &mut &b""[..]).unwrap();
        assert_eq!(r.lease, 0x694d5765fc71500b);
        assert!(r.prev_kv && r.ignore_lease && !r.ignore_value);
        let bad = PutArgs {
            args: os(&["k", "v"]),
            lease: "zz".into(),
            ..Default::default()
        };
        assert_eq!(
            put_request(&bad, &mut &b""[..]).unwrap_err().to_string(),
            "bad lease ID (strconv.ParseInt: parsing \"zz\": invalid syntax), expecting ID in Hex"
        );
        let ignore = PutArgs {
            args: os(&["k", "v"]),
            lease: "0".into(),
            ignore_value: true,
            ..Default::default()
        };
        assert_eq!(
            put_request(&ignore, &mut &b""[..]).unwrap_err().to_string(),
            "put command needs only 1 argument when 'ignore-value' is set"
        );
    }

    #[test]
    fn del_builds_prefix_and_prev_kv() {
        let r = delete_request(&DelArgs {
            args: os(&["p/"]),
            prefix: true,
            prev_kv: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            (r.key, r.range_end, r.prev_kv),
            (b"p/".to_vec(), b"p0".to_vec(), true)
        );
        let err = delete_request(&DelArgs {
            args: os(&["a", "b", "c"]),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.exit_code(), 128);
    }
}
