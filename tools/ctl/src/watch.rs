//! `watch`: stream the events on a key, a range or a prefix until the server ends the watch.
//!
//! Like etcdctl: the key may also come from `ETCDCTL_WATCH_KEY` / `ETCDCTL_WATCH_RANGE_END`;
//! `-- command args...` runs a command for every event (with `ETCD_WATCH_*` variables set);
//! `-i` reads `watch ...` lines from standard input and runs each as another watch on the
//! same stream. A watch cancelled by the server (e.g. its start revision was compacted)
//! ends the command with exit code 5.

use std::ffi::OsString;
use std::io::BufRead;

use clap::{Args, Parser};
use kvstore_proto::etcdserverpb::{
    watch_request::RequestUnion, WatchCreateRequest, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::cli::Context;
use crate::client::rpc_error;
use crate::error::{Error, Result};
use crate::go::quote;
use crate::kv::prefix_range_end;
use crate::output::{emit, notices, Printer};

/// Flags and arguments of `watch`.
#[derive(Args, Debug, Clone, Default)]
pub struct WatchArgs {
    /// The key or prefix to watch, and optionally the end of the range [key, range_end).
    #[arg(value_name = "KEY [RANGE_END]")]
    pub args: Vec<OsString>,
    /// A command (and its arguments) to run for every event, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub exec: Vec<OsString>,
    /// Interactive mode: read `watch [options] <key> [range_end]` lines from standard input.
    #[arg(short, long)]
    pub interactive: bool,
    /// Watch on a prefix.
    #[arg(long)]
    pub prefix: bool,
    /// Get the previous key-value pair before the event happens.
    #[arg(long)]
    pub prev_kv: bool,
    /// Revision to start watching from; 0 for the next change.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub rev: i64,
    /// Ask the server for periodic progress notifications (printed as `progress notify: REV`).
    #[arg(long)]
    pub progress_notify: bool,
}

/// A `watch ...` line of interactive mode.
#[derive(Parser, Debug)]
#[command(no_binary_name = true, disable_help_flag = true)]
struct InteractiveLine {
    /// The same flags and arguments as on the command line.
    #[command(flatten)]
    args: WatchArgs,
}

/// etcdctl's error for a watch without a key.
fn bad_args_num() -> Error {
    Error::BadArgs("bad number of arguments".into())
}

/// One watch to create: the request, and the command to run for its events.
#[derive(Debug, Clone)]
struct WatchSpec {
    /// The create request to send on the watch stream.
    create: WatchCreateRequest,
    /// The command to run for each of its events (empty for none).
    exec: Vec<OsString>,
}

/// The key arguments after applying `ETCDCTL_WATCH_KEY` / `ETCDCTL_WATCH_RANGE_END`.
fn key_args(args: &WatchArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<Vec<u8>>> {
    let env_key = env("ETCDCTL_WATCH_KEY").unwrap_or_default();
    let env_range = env("ETCDCTL_WATCH_RANGE_END").unwrap_or_default();
    if env_key.is_empty() && !env_range.is_empty() {
        return Err(Error::BadArgs(format!(
            "ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END={}",
            quote(env_range.as_bytes())
        )));
    }
    let mut keys: Vec<Vec<u8>> = args
        .args
        .iter()
        .map(|a| a.as_encoded_bytes().to_vec())
        .collect();
    if !env_key.is_empty() {
        if !keys.is_empty() {
            return Err(Error::BadArgs(
                "bad number of arguments (found conflicting environment key)".into(),
            ));
        }
        keys.push(env_key.into_bytes());
        if !env_range.is_empty() {
            keys.push(env_range.into_bytes());
        }
    }
    if keys.is_empty() {
        return Err(bad_args_num());
    }
    Ok(keys)
}

/// Builds the create request for a watch (etcdctl's `getWatchChan`); the error is the text
/// etcdctl gives for a range end together with `--prefix`.
fn create_request(args: &WatchArgs, keys: &[Vec<u8>]) -> Result<WatchCreateRequest, String> {
    let mut key = keys.first().cloned().unwrap_or_default();
    let mut range_end = Vec::new();
    if keys.len() == 2 {
        if args.prefix {
            return Err("`range_end` and `--prefix` are mutually exclusive".into());
        }
        range_end = keys[1].clone();
    }
    if args.prefix {
        if key.is_empty() {
            key = vec![0];
            range_end = vec![0];
        } else {
            range_end = prefix_range_end(&key);
        }
    }
    Ok(WatchCreateRequest {
        key,
        range_end,
        start_revision: args.rev,
        progress_notify: args.progress_notify,
        prev_kv: args.prev_kv,
        ..Default::default()
    })
}

/// What the stdin reader of interactive mode hands to the watch loop.
enum InteractiveEvent {
    /// A new watch to create.
    Watch(WatchSpec),
    /// A line that was not a usable watch command: report it and go on.
    Notice(crate::output::Rendered),
    /// End of input or a bad flag: kvctl exits with this error.
    Fatal(Error),
}

/// The first line of a clap error, without its `error: ` prefix.
pub(crate) fn clap_error_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// Parses one line of interactive mode: a new watch, a notice to print, or a fatal error.
fn interactive_line(line: &str, env: &dyn Fn(&str) -> Option<String>) -> InteractiveEvent {
    let has_env_key = env("ETCDCTL_WATCH_KEY").is_some_and(|k| !k.is_empty());
    let words = match crate::txn::argify(line) {
        Ok(w) => w,
        Err(e) => return InteractiveEvent::Fatal(e),
    };
    if words.len() < 2 && !has_env_key {
        return InteractiveEvent::Notice(notices::invalid_watch_command(
            line,
            "command type or key is not provided",
        ));
    }
    if words.first().map(Vec::as_slice) != Some(b"watch") {
        return InteractiveEvent::Notice(notices::invalid_watch_command(
            line,
            "only support watch",
        ));
    }
    let words = words[1..]
        .iter()
        .map(|w| OsString::from(String::from_utf8_lossy(w).into_owned()));
    let parsed = match InteractiveLine::try_parse_from(words) {
        Ok(p) => p.args,
        Err(e) => return InteractiveEvent::Fatal(Error::BadArgs(clap_error_line(&e))),
    };
    let keys = match key_args(&parsed, env) {
        Ok(k) => k,
        Err(e) => return InteractiveEvent::Fatal(e),
    };
    match create_request(&parsed, &keys) {
        Ok(create) => InteractiveEvent::Watch(WatchSpec {
            create,
            exec: parsed.exec,
        }),
        Err(why) => InteractiveEvent::Notice(notices::invalid_watch_command(line, &why)),
    }
}

/// `watch`.
pub async fn run(ctx: &Context, args: WatchArgs) -> Result<()> {
    let env = |name: &str| std::env::var(name).ok();
    let (req_tx, req_rx) = mpsc::channel::<WatchRequest>(16);
    let (stdin_tx, mut stdin_rx) = mpsc::channel::<InteractiveEvent>(16);
    // The commands to run for watches whose creation the server has not acknowledged yet,
    // in creation order (the order the server answers in), then by watch ID.
    let mut pending_execs = std::collections::VecDeque::new();
    let mut exec_by_id = std::collections::HashMap::new();
    let (client, printer) = if args.interactive {
        let connected = ctx.connect().await?;
        spawn_stdin_reader(stdin_tx, env);
        // The stream starts with the first watch typed in.
        loop {
            match stdin_rx.recv().await {
                Some(InteractiveEvent::Watch(spec)) => {
                    pending_execs.push_back(spec.exec);
                    let _ = req_tx.send(create_message(spec.create)).await;
                    break;
                }
                Some(InteractiveEvent::Notice(n)) => emit(&n)?,
                Some(InteractiveEvent::Fatal(e)) => return Err(e),
                None => return Err(Error::Interrupted("watch is canceled by the server".into())),
            }
        }
        connected
    } else {
        let keys = key_args(&args, &env)?;
        let connected = ctx.connect().await?;
        let create = create_request(&args, &keys).map_err(Error::BadArgs)?;
        pending_execs.push_back(args.exec.clone());
        let _ = req_tx.send(create_message(create)).await;
        drop(stdin_tx);
        connected
    };

    let mut request = tonic::Request::new(ReceiverStream::new(req_rx));
    // etcdctl's WithRequireLeader: fail the watch rather than hang on a member without leader.
    request.metadata_mut().insert(
        "hasleader",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let mut stream = client
        .watch()
        .watch(request)
        .await
        .map_err(|s| Error::from(rpc_error(&s)))?
        .into_inner();
    let mut stdin_open = args.interactive;
    loop {
        tokio::select! {
            event = stdin_rx.recv(), if stdin_open => match event {
                Some(InteractiveEvent::Watch(spec)) => {
                    pending_execs.push_back(spec.exec);
                    let _ = req_tx.send(create_message(spec.create)).await;
                }
                Some(InteractiveEvent::Notice(n)) => emit(&n)?,
                Some(InteractiveEvent::Fatal(e)) => return Err(e),
                None => stdin_open = false,
            },
            msg = stream.message() => match msg {
                Ok(Some(resp)) => {
                    if resp.created {
                        if let Some(exec) = pending_execs.pop_front() {
                            exec_by_id.insert(resp.watch_id, exec);
                        }
                    }
                    let exec = exec_by_id.get(&resp.watch_id).cloned().unwrap_or_default();
                    if !handle_response(&printer, &resp, &exec)? && !args.interactive {
                        break;
                    }
                }
                Ok(None) | Err(_) => break,
            },
        }
    }
    Err(Error::Interrupted("watch is canceled by the server".into()))
}

/// Reads interactive mode's lines on a thread of its own (standard input blocks), handing
/// each parsed line to the watch loop; ends after the first fatal one (e.g. end of input).
fn spawn_stdin_reader(
    tx: mpsc::Sender<InteractiveEvent>,
    env: impl Fn(&str) -> Option<String> + Send + 'static,
) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut lines = stdin.lock();
        loop {
            let mut buf = Vec::new();
            let event = match lines.read_until(b'\n', &mut buf) {
                Ok(_) if buf.last() == Some(&b'\n') => {
                    buf.pop();
                    interactive_line(&String::from_utf8_lossy(&buf), &env)
                }
                Ok(_) => InteractiveEvent::Fatal(Error::InvalidInput(
                    "Error reading watch request line: EOF".into(),
                )),
                Err(e) => InteractiveEvent::Fatal(Error::InvalidInput(format!(
                    "Error reading watch request line: {e}"
                ))),
            };
            let fatal = matches!(event, InteractiveEvent::Fatal(_));
            if tx.blocking_send(event).is_err() || fatal {
                return;
            }
        }
    });
}

fn create_message(create: WatchCreateRequest) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(create)),
    }
}

/// Prints one response of the stream; `false` when the watch it belongs to has ended.
fn handle_response(printer: &Printer, resp: &WatchResponse, exec: &[OsString]) -> Result<bool> {
    if resp.canceled && resp.compact_revision == 0 {
        // Cancelled for another reason (clientv3 closes the channel without a response).
        return Ok(false);
    }
    if resp.created && !resp.canceled {
        // The creation acknowledgement: clientv3 does not hand it to etcdctl.
        return Ok(true);
    }
    if resp.canceled {
        emit(&notices::watch_canceled(
            "etcdserver: mvcc: required revision has been compacted",
        ))?;
    }
    let progress = resp.events.is_empty()
        && !resp.canceled
        && resp.compact_revision == 0
        && resp.header.is_some_and(|h| h.revision != 0);
    if progress {
        emit(&notices::progress_notify(
            resp.header.map_or(0, |h| h.revision),
        ))?;
    }
    emit(&printer.watch(resp)?)?;
    if !exec.is_empty() {
        run_exec(exec, resp)?;
    }
    Ok(!resp.canceled)
}

/// Runs the `-- command` once per event, with etcdctl's `ETCD_WATCH_*` variables.
fn run_exec(exec: &[OsString], resp: &WatchResponse) -> Result<()> {
    for ev in &resp.events {
        let kv = ev.kv.clone().unwrap_or_default();
        let event_type = if ev.r#type == 1 { "DELETE" } else { "PUT" };
        let status = std::process::Command::new(&exec[0])
            .args(&exec[1..])
            .env(
                "ETCD_WATCH_REVISION",
                resp.header.map_or(0, |h| h.revision).to_string(),
            )
            .env("ETCD_WATCH_EVENT_TYPE", quote(event_type.as_bytes()))
            .env("ETCD_WATCH_KEY", quote(&kv.key))
            .env("ETCD_WATCH_VALUE", quote(&kv.value))
            .status();
        let failure = match status {
            Ok(s) if s.success() => None,
            Ok(s) => Some(s.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = failure {
            let quoted: Vec<String> = exec.iter().map(|a| quote(a.as_encoded_bytes())).collect();
            emit(&crate::output::Rendered::err(format!(
                "command [{}] error ({why})\n",
                quoted.join(" ")
            )))?;
            return Err(Error::Reported);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn args(keys: &[&str]) -> WatchArgs {
        WatchArgs {
            args: keys.iter().map(OsString::from).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn prefix_watch_covers_the_prefix() {
        let a = WatchArgs {
            prefix: true,
            rev: 5,
            prev_kv: true,
            ..args(&["w/"])
        };
        let c = create_request(&a, &key_args(&a, &no_env).unwrap()).unwrap();
        assert_eq!((c.key, c.range_end), (b"w/".to_vec(), b"w0".to_vec()));
        assert_eq!((c.start_revision, c.prev_kv), (5, true));
    }

    #[test]
    fn range_watch_uses_the_second_argument_only_when_there_are_two() {
        let a = args(&["a", "c"]);
        let c = create_request(&a, &key_args(&a, &no_env).unwrap()).unwrap();
        assert_eq!(c.range_end, b"c".to_vec());
        let a = WatchArgs {
            prefix: true,
            ..args(&["a", "c"])
        };
        assert_eq!(
            create_request(&a, &key_args(&a, &no_env).unwrap()).unwrap_err(),
            "`range_end` and `--prefix` are mutually exclusive"
        );
    }

    #[test]
    fn key_can_come_from_the_environment() {
        let env = |n: &str| (n == "ETCDCTL_WATCH_KEY").then(|| "k".to_string());
        assert_eq!(key_args(&args(&[]), &env).unwrap(), vec![b"k".to_vec()]);
        assert_eq!(
            key_args(&args(&["x"]), &env).unwrap_err().to_string(),
            "bad number of arguments (found conflicting environment key)"
        );
        let err = key_args(&args(&[]), &no_env).unwrap_err();
        assert_eq!(
            (err.exit_code(), err.to_string()),
            (128, "bad number of arguments".into())
        );
    }

    #[test]
    fn interactive_lines_are_watch_commands() {
        match interactive_line("watch foo --prefix --rev 3", &no_env) {
            InteractiveEvent::Watch(spec) => {
                assert_eq!(spec.create.key, b"foo".to_vec());
                assert_eq!(spec.create.range_end, b"fop".to_vec());
                assert_eq!(spec.create.start_revision, 3);
            }
            _ => panic!("expected a watch"),
        }
        match interactive_line("get foo", &no_env) {
            InteractiveEvent::Notice(n) => {
                assert_eq!(
                    n.stderr,
                    b"Invalid command get foo (only support watch)\n".to_vec()
                )
            }
            _ => panic!("expected a notice"),
        }
        match interactive_line("watch", &no_env) {
            InteractiveEvent::Notice(n) => assert_eq!(
                n.stderr,
                b"Invalid command watch (command type or key is not provided)\n".to_vec()
            ),
            _ => panic!("expected a notice"),
        }
    }
}
