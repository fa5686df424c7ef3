//! `txn`: a transaction read from standard input in etcdctl's format.
//!
//! ```text
//! mod("key1") > "0"            <- compares, one per line
//! value("key2") = "x"
//!                              <- blank line
//! put key1 "overwrote-key1"    <- success requests: put, get and del command lines
//!                              <- blank line
//! put key1 "created-key1"      <- failure requests
//!                              <- blank line (required: end of input before it is an error)
//! ```
//!
//! A compare is `<target>("<key>") <op> "<value>"` with target `ver[sion]`, `c[reate]`,
//! `m[od]`, `val[ue]` or `lease` (value in hex), and op `=`, `!=`, `>` or `<`; keys and values
//! are Go string literals. Request lines are split like etcdctl's `Argify` (double quotes
//! with Go escapes, single quotes verbatim) and parsed with the `put`/`get`/`del` flags.

use std::io::BufRead;

use clap::{Args, Parser, Subcommand};
use kvstore_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request,
    Compare, RequestOp, TxnRequest,
};

use crate::cli::Context;
use crate::error::{Error, Result};
use crate::go;
use crate::kv::{self, DelArgs, GetArgs, PutArgs};
use crate::output::{emit, notices};

/// Flags of `txn`.
#[derive(Args, Debug, Clone, Default)]
pub struct TxnArgs {
    /// Input the transaction interactively, with a prompt before each section.
    #[arg(short, long)]
    pub interactive: bool,
    /// (etcdctl accepts none; given only to report that.)
    #[arg(hide = true)]
    pub extra: Vec<String>,
}

/// `txn`.
pub async fn run(ctx: &Context, args: TxnArgs) -> Result<()> {
    if !args.extra.is_empty() {
        return Err(Error::BadArgs(
            "txn command does not accept argument".into(),
        ));
    }
    let printer = ctx.printer()?;
    let mut prompt = |section: &str| {
        if args.interactive {
            let _ = emit(&notices::txn_prompt(section));
        }
    };
    let req = read_txn(&mut std::io::stdin().lock(), &mut prompt)?;
    let (client, _) = ctx.connect().await?;
    let resp = client.unary(client.kv().txn(req)).await?;
    emit(&printer.txn(&resp)?)
}

/// Reads a whole transaction from `input`, calling `prompt` before each section.
pub fn read_txn(input: &mut dyn BufRead, prompt: &mut dyn FnMut(&str)) -> Result<TxnRequest> {
    prompt("compares:");
    let mut compare = Vec::new();
    while let Some(line) = read_section_line(input)? {
        compare.push(parse_compare(&line)?);
    }
    prompt("success requests (get, put, del):");
    let mut success = Vec::new();
    while let Some(line) = read_section_line(input)? {
        success.push(parse_request(&line)?);
    }
    prompt("failure requests (get, put, del):");
    let mut failure = Vec::new();
    while let Some(line) = read_section_line(input)? {
        failure.push(parse_request(&line)?);
    }
    Ok(TxnRequest {
        compare,
        success,
        failure,
    })
}

/// The next line of a section, trimmed; `None` at the blank line that ends the section.
/// Input that ends before a line's newline is an error, as etcdctl's `ReadString('\n')`.
fn read_section_line(input: &mut dyn BufRead) -> Result<Option<String>> {
    let mut buf = Vec::new();
    input.read_until(b'\n', &mut buf)?;
    if buf.last() != Some(&b'\n') {
        return Err(Error::InvalidInput("EOF".into()));
    }
    let line = String::from_utf8_lossy(&buf).trim().to_string();
    Ok(if line.is_empty() { None } else { Some(line) })
}

/// A tiny `fmt.Sscanf` for the one format etcdctl scans compares with: `%q) %s %q`.
struct Scanner<'a> {
    /// The input not scanned yet.
    rest: &'a str,
}

impl Scanner<'_> {
    fn skip_spaces(&mut self) {
        self.rest = self.rest.trim_start();
    }

    /// `%q`: a double-quoted (Go escapes) or back-quoted string.
    fn quoted(&mut self) -> Option<Vec<u8>> {
        self.skip_spaces();
        let mut chars = self.rest.char_indices();
        let (_, open) = chars.next()?;
        let end = match open {
            '`' => chars.find(|&(_, c)| c == '`')?.0,
            '"' => {
                let mut escaped = false;
                let mut end = None;
                for (i, c) in chars {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        end = Some(i);
                        break;
                    }
                }
                end?
            }
            _ => return None,
        };
        let literal = &self.rest[..=end];
        self.rest = &self.rest[end + 1..];
        go::unquote(literal).ok()
    }

    /// A literal character of the format.
    fn literal(&mut self, c: char) -> Option<()> {
        self.rest = self.rest.strip_prefix(c)?;
        Some(())
    }

    /// A space in the format: one or more spaces in the input, or its end.
    fn space(&mut self) -> Option<()> {
        if !self.rest.is_empty() && !self.rest.starts_with(char::is_whitespace) {
            return None;
        }
        self.skip_spaces();
        Some(())
    }

    /// `%s`: a run of non-space characters.
    fn word(&mut self) -> Option<String> {
        self.skip_spaces();
        if self.rest.is_empty() {
            return None;
        }
        let end = self
            .rest
            .find(char::is_whitespace)
            .unwrap_or(self.rest.len());
        let word = self.rest[..end].to_string();
        self.rest = &self.rest[end..];
        Some(word)
    }
}

/// Parses one compare line (etcdctl's `parseCompare`), with etcdctl's error texts.
pub fn parse_compare(line: &str) -> Result<Compare> {
    let malformed =
        |detail: String| Error::InvalidInput(format!("malformed comparison: {line}{detail}"));
    let Some((target, rest)) = line.split_once('(') else {
        return Err(malformed(String::new()));
    };
    let mut scan = Scanner { rest };
    let (mut key, mut op, mut val) = (Vec::new(), String::new(), Vec::new());
    let scanned = (|| {
        key = scan.quoted()?;
        scan.literal(')')?;
        scan.space()?;
        op = scan.word()?;
        scan.space()?;
        val = scan.quoted()?;
        Some(())
    })();
    if scanned.is_none() {
        return Err(malformed(format!(
            "; got {target}({}) {op} {}",
            go::quote(&key),
            go::quote(&val)
        )));
    }
    let invalid = || Error::InvalidInput(format!("invalid txn compare request: {line}"));
    let number =
        |base: u32| go::parse_int(&String::from_utf8_lossy(&val), base).map_err(|_| invalid());
    let (target, union) = match target {
        "ver" | "version" => (CompareTarget::Version, TargetUnion::Version(number(10)?)),
        "c" | "create" => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(number(10)?),
        ),
        "m" | "mod" => (CompareTarget::Mod, TargetUnion::ModRevision(number(10)?)),
        "val" | "value" => (CompareTarget::Value, TargetUnion::Value(val.clone())),
        "lease" => (CompareTarget::Lease, TargetUnion::Lease(number(16)?)),
        other => return Err(malformed(format!(" (unknown target {other})"))),
    };
    let result = match op.as_str() {
        "=" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        ">" => CompareResult::Greater,
        "<" => CompareResult::Less,
        other => return Err(malformed(format!(" (unknown result op {other})"))),
    };
    Ok(Compare {
        result: result as i32,
        target: target as i32,
        key,
        range_end: Vec::new(),
        target_union: Some(union),
    })
}

/// A request line: a `put`, `get` or `del` command line with that command's flags.
#[derive(Parser, Debug)]
#[command(no_binary_name = true, disable_help_flag = true)]
struct RequestLine {
    /// The request: put, get or del.
    #[command(subcommand)]
    op: RequestCommand,
}

#[derive(Subcommand, Debug)]
enum RequestCommand {
    /// `put <key> <value> [flags]`.
    Put(PutArgs),
    /// `get <key> [range_end] [flags]`.
    Get(GetArgs),
    /// `del <key> [range_end] [flags]`.
    Del(DelArgs),
}

/// Parses one success or failure line (etcdctl's `parseRequestUnion`).
pub fn parse_request(line: &str) -> Result<RequestOp> {
    let args = argify(line)?;
    if args.len() < 2 {
        return Err(Error::InvalidInput(format!(
            "invalid txn compare request: {line}"
        )));
    }
    let parsed = RequestLine::try_parse_from(args.into_iter().map(bytes_to_os))
        .map_err(|_| Error::InvalidInput(format!("invalid txn request: {line}")))?;
    let request = match parsed.op {
        RequestCommand::Put(a) => Request::RequestPut(kv::put_request(&a, &mut std::io::empty())?),
        RequestCommand::Get(a) => Request::RequestRange(kv::range_request(&a)?),
        RequestCommand::Del(a) => Request::RequestDeleteRange(kv::delete_request(&a)?),
    };
    Ok(RequestOp {
        request: Some(request),
    })
}

#[cfg(unix)]
fn bytes_to_os(b: Vec<u8>) -> std::ffi::OsString {
    std::os::unix::ffi::OsStringExt::from_vec(b)
}

#[cfg(not(unix))]
fn bytes_to_os(b: Vec<u8>) -> std::ffi::OsString {
    String::from_utf8_lossy(&b).into_owned().into()
}

/// Splits a line into arguments like etcdctl's `Argify`: runs of non-space characters,
/// `"double-quoted"` strings with Go escapes, and `'single-quoted'` strings verbatim. An
/// unterminated quote is skipped over. (etcdctl 3.4 truncates single-quoted arguments by
/// a slicing bug; kvctl keeps their whole text.)
pub fn argify(line: &str) -> Result<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        match c {
            '"' => match double_quoted_len(rest) {
                Some(len) => {
                    let arg = go::unquote(&rest[..len]).map_err(Error::InvalidInput)?;
                    args.push(arg);
                    rest = &rest[len..];
                }
                None => rest = &rest[1..],
            },
            '\'' => match rest[1..].find('\'') {
                Some(end) => {
                    args.push(rest.as_bytes()[1..=end].to_vec());
                    rest = &rest[end + 2..];
                }
                None => rest = &rest[1..],
            },
            c if is_regex_space(c) => rest = &rest[c.len_utf8()..],
            _ => {
                let end = rest.find(is_regex_space).unwrap_or(rest.len());
                args.push(rest.as_bytes()[..end].to_vec());
                rest = &rest[end..];
            }
        }
    }
    Ok(args)
}

/// RE2's `\s`: ASCII space, tab, newline, form feed and carriage return.
fn is_regex_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r')
}

/// The length of the double-quoted string `s` starts with (`"(?:[^"\\]|\\.)*"`), if closed.
fn double_quoted_len(s: &str) -> Option<usize> {
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some(i + 1),
            '\\' => match chars.next() {
                Some((_, '\n')) | None => return None,
                Some(_) => {}
            },
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvstore_proto::etcdserverpb::{range_request::SortTarget, RangeRequest};

    fn read(input: &str) -> Result<TxnRequest> {
        read_txn(&mut input.as_bytes(), &mut |_| {})
    }

    #[test]
    fn reads_compares_success_and_failure_sections() {
        let t = read("value(\"t1\") = \"v1\"\nmod(\"t1\") > \"0\"\n\nput t1 v2\nget t1\ndel t2\n\nput t1 fail\n\n")
            .unwrap();
        assert_eq!(t.compare.len(), 2);
        assert_eq!(t.compare[0].target, CompareTarget::Value as i32);
        assert_eq!(
            t.compare[0].target_union,
            Some(TargetUnion::Value(b"v1".to_vec()))
        );
        assert_eq!(t.compare[1].result, CompareResult::Greater as i32);
        assert_eq!(t.compare[1].target_union, Some(TargetUnion::ModRevision(0)));
        assert_eq!(t.success.len(), 3);
        assert_eq!(t.failure.len(), 1);
        match &t.success[1].request {
            Some(Request::RequestRange(RangeRequest { key, .. })) => assert_eq!(key, b"t1"),
            other => panic!("expected a range request, got {other:?}"),
        }
    }

    #[test]
    fn input_must_end_with_the_blank_line_after_failures() {
        let err = read("\nput a b\n\nput a c\n").unwrap_err();
        assert_eq!((err.exit_code(), err.to_string()), (3, "EOF".into()));
        assert!(read("\n\n\n").unwrap().compare.is_empty());
    }

    #[test]
    fn prompts_come_before_each_section() {
        let mut seen = Vec::new();
        read_txn(&mut "\n\n\n".as_bytes(), &mut |s| seen.push(s.to_string())).unwrap();
        assert_eq!(
            seen,
            [
                "compares:",
                "success requests (get, put, del):",
                "failure requests (get, put, del):"
            ]
        );
    }

    #[test]
    fn compare_targets_and_ops() {
        let c = parse_compare("ver(\"k\") != \"3\"").unwrap();
        assert_eq!(
            (c.target, c.result),
            (
                CompareTarget::Version as i32,
                CompareResult::NotEqual as i32
            )
        );
        let c = parse_compare("c(\"k\") < \"9\"").unwrap();
        assert_eq!(c.target_union, Some(TargetUnion::CreateRevision(9)));
        let c = parse_compare("lease(\"k\") = \"694d5765fc71500b\"").unwrap();
        assert_eq!(c.target_union, Some(TargetUnion::Lease(0x694d5765fc71500b)));
        assert_eq!(c.key, b"k");
        let c = parse_compare("value(`k`) = \"a\\tb\"").unwrap();
        assert_eq!(c.target_union, Some(TargetUnion::Value(b"a\tb".to_vec())));
    }

    #[test]
    fn malformed_compares_report_like_etcdctl() {
        let msg = |line: &str| parse_compare(line).unwrap_err().to_string();
        assert_eq!(msg("mod k > 0"), "malformed comparison: mod k > 0");
        assert_eq!(
            msg("mod(\"k\")>\"0\""),
            "malformed comparison: mod(\"k\")>\"0\"; got mod(\"k\")  \"\""
        );
        assert_eq!(
            msg("mod(\"k\" = \"x\""),
            "malformed comparison: mod(\"k\" = \"x\"; got mod(\"k\")  \"\""
        );
        assert_eq!(
            msg("foo(\"k\") = \"0\""),
            "malformed comparison: foo(\"k\") = \"0\" (unknown target foo)"
        );
        assert_eq!(
            msg("mod(\"k\") = \"x\""),
            "invalid txn compare request: mod(\"k\") = \"x\""
        );
        assert_eq!(parse_compare("mod k").unwrap_err().exit_code(), 3);
    }

    #[test]
    fn request_lines_use_command_flags() {
        let op = parse_request("get p/ --prefix --limit 2 --sort-by=create").unwrap();
        match op.request {
            Some(Request::RequestRange(r)) => {
                assert_eq!(
                    (r.key, r.range_end, r.limit),
                    (b"p/".to_vec(), b"p0".to_vec(), 2)
                );
                assert_eq!(r.sort_target, SortTarget::Create as i32);
            }
            other => panic!("expected a range request, got {other:?}"),
        }
        match parse_request("put \"a\\tb\" \"x y\" --prev-kv")
            .unwrap()
            .request
        {
            Some(Request::RequestPut(p)) => {
                assert_eq!(
                    (p.key, p.value, p.prev_kv),
                    (b"a\tb".to_vec(), b"x y".to_vec(), true)
                )
            }
            other => panic!("expected a put request, got {other:?}"),
        }
        assert!(matches!(
            parse_request("del k").unwrap().request,
            Some(Request::RequestDeleteRange(_))
        ));
    }

    #[test]
    fn bad_request_lines_report_like_etcdctl() {
        let err = parse_request("foo").unwrap_err();
        assert_eq!(
            (err.exit_code(), err.to_string()),
            (3, "invalid txn compare request: foo".into())
        );
        let err = parse_request("foo bar").unwrap_err();
        assert_eq!(err.to_string(), "invalid txn request: foo bar");
        let err = parse_request("get p/ --bogus").unwrap_err();
        assert_eq!(err.to_string(), "invalid txn request: get p/ --bogus");
        let err = parse_request("get a --prefix --from-key").unwrap_err();
        assert_eq!(err.exit_code(), 128);
    }

    #[test]
    fn argify_splits_quotes_like_etcdctl() {
        let args = argify(r#"put "a b\x41" 'c d' e"f g"#).unwrap();
        assert_eq!(
            args,
            vec![
                b"put".to_vec(),
                b"a bA".to_vec(),
                b"c d".to_vec(),
                b"e\"f".to_vec(),
                b"g".to_vec()
            ]
        );
        // An unterminated quote is skipped, the rest split normally.
        assert_eq!(
            argify("put k \"a b").unwrap(),
            vec![b"put".to_vec(), b"k".to_vec(), b"a".to_vec(), b"b".to_vec()]
        );
    }
}
