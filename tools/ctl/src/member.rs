//! `member list | add | remove | update | promote`: the Cluster service.
//!
//! Member IDs are written and read in hexadecimal. Peer URLs are checked on the client
//! before `add` and `update`, with etcd's `types.NewURLs` rules and messages.

use clap::{Args, Subcommand};
use kvstore_proto::etcdserverpb::{
    MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
    MemberUpdateRequest, RangeRequest,
};

use crate::cli::Context;
use crate::error::{Error, Result};
use crate::go;
use crate::output::{emit, notices, Format};

/// `member` and its subcommands.
#[derive(Args, Debug)]
pub struct MemberArgs {
    /// Which subcommand to run.
    #[command(subcommand)]
    command: MemberCommand,
}

#[derive(Subcommand, Debug)]
enum MemberCommand {
    /// Lists all members in the cluster: ID, status, name, peer addrs, client addrs, is learner
    List {
        /// Extra arguments, which etcdctl ignores (or rejects, where it does).
        #[arg(hide = true)]
        extra: Vec<String>,
    },
    /// Adds a member into the cluster
    Add {
        /// The new member's name.
        #[arg(value_name = "NAME")]
        args: Vec<String>,
        /// Comma-separated peer URLs for the new member.
        #[arg(long, default_value = "", hide_default_value = true)]
        peer_urls: String,
        /// Add the member as a non-voting learner.
        #[arg(long)]
        learner: bool,
    },
    /// Removes a member from the cluster
    Remove {
        /// Member ID, in hexadecimal.
        #[arg(value_name = "MEMBER_ID")]
        args: Vec<String>,
    },
    /// Updates a member's peer URLs
    Update {
        /// Member ID, in hexadecimal.
        #[arg(value_name = "MEMBER_ID")]
        args: Vec<String>,
        /// Comma-separated peer URLs for the updated member.
        #[arg(long, default_value = "", hide_default_value = true)]
        peer_urls: String,
    },
    /// Promotes a non-voting learner member to a voting one
    Promote {
        /// Member ID, in hexadecimal.
        #[arg(value_name = "MEMBER_ID")]
        args: Vec<String>,
    },
}

/// The member ID argument of remove, update and promote.
fn member_id(args: &[String]) -> Result<u64> {
    let [arg] = args else {
        return Err(Error::BadArgs("member ID is not provided".into()));
    };
    go::parse_uint(arg, 16)
        .map_err(|e| Error::BadArgs(format!("bad member ID arg ({e}), expecting ID in Hex")))
}

/// Checks peer URLs like etcd's `types.NewURLs`: http, https, unix or unixs; `host:port`;
/// no path.
pub fn check_peer_urls(urls: &[String]) -> Result<()> {
    if urls.is_empty() {
        return Err(Error::Request("no valid URLs given".into()));
    }
    for raw in urls {
        let url = raw.trim();
        let scheme_end = url.find(':').filter(|&i| {
            let s = &url[..i];
            s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        });
        let scheme = scheme_end.map_or("", |i| &url[..i]).to_ascii_lowercase();
        if !matches!(scheme.as_str(), "http" | "https" | "unix" | "unixs") {
            return Err(Error::Request(format!(
                "URL scheme must be http, https, unix, or unixs: {url}"
            )));
        }
        let rest = &url[scheme.len() + 1..];
        let (host, path) = match rest.strip_prefix("//") {
            Some(authority) => {
                let end = authority.find(['/', '?', '#']).unwrap_or(authority.len());
                let host = authority[..end].rsplit('@').next().unwrap_or_default();
                let path_end = authority.find(['?', '#']).unwrap_or(authority.len());
                (host, &authority[end.min(path_end)..path_end])
            }
            None => ("", rest),
        };
        if !is_host_port(host) {
            return Err(Error::Request(format!(
                "URL address does not have the form \"host:port\": {url}"
            )));
        }
        if !path.is_empty() {
            return Err(Error::Request(format!(
                "URL must not contain a path: {url}"
            )));
        }
    }
    Ok(())
}

/// Whether Go's `net.SplitHostPort` accepts `s`.
fn is_host_port(s: &str) -> bool {
    if let Some(rest) = s.strip_prefix('[') {
        return rest.find(']').is_some_and(|i| {
            let after = &rest[i + 1..];
            after.starts_with(':') && !after[1..].contains(':')
        });
    }
    s.matches(':').count() == 1 && !s.contains(['[', ']'])
}

/// `member ...`.
pub async fn run(ctx: &Context, args: MemberArgs) -> Result<()> {
    match args.command {
        MemberCommand::List { .. } => {
            let (client, printer) = ctx.connect().await?;
            let resp = client
                .unary(client.cluster().member_list(MemberListRequest {
                    linearizable: false,
                }))
                .await?;
            emit(&printer.member_list(&resp)?)
        }
        MemberCommand::Add {
            args,
            peer_urls,
            learner,
        } => add(ctx, args, peer_urls, learner).await,
        MemberCommand::Remove { args } => {
            let id = member_id(&args)?;
            let (client, printer) = ctx.connect().await?;
            let resp = client
                .unary(client.cluster().member_remove(MemberRemoveRequest { id }))
                .await?;
            emit(&printer.member_remove(id, &resp)?)
        }
        MemberCommand::Update { args, peer_urls } => {
            let id = member_id(&args)?;
            if peer_urls.is_empty() {
                return Err(Error::BadArgs("member peer urls not provided".into()));
            }
            let urls: Vec<String> = peer_urls.split(',').map(str::to_string).collect();
            let (client, printer) = ctx.connect().await?;
            check_peer_urls(&urls)?;
            let req = MemberUpdateRequest {
                id,
                peer_ur_ls: urls,
            };
            let resp = client.unary(client.cluster().member_update(req)).await?;
            emit(&printer.member_update(id, &resp)?)
        }
        MemberCommand::Promote { args } => {
            let id = member_id(&args)?;
            let (client, printer) = ctx.connect().await?;
            let resp = client
                .unary(client.cluster().member_promote(MemberPromoteRequest { id }))
                .await?;
            emit(&printer.member_promote(id, &resp)?)
        }
    }
}

async fn add(ctx: &Context, args: Vec<String>, peer_urls: String, learner: bool) -> Result<()> {
    let name = match args.as_slice() {
        [] => return Err(Error::BadArgs("member name not provided".into())),
        [name] => name.clone(),
        _ => {
            let mut msg = String::from("too many arguments");
            for a in &args {
                if a.to_lowercase().starts_with("http") {
                    msg.push_str(&format!(", did you mean --peer-urls={a}"));
                }
            }
            return Err(Error::BadArgs(msg));
        }
    };
    if peer_urls.is_empty() {
        return Err(Error::BadArgs("member peer urls not provided".into()));
    }
    let urls: Vec<String> = peer_urls.split(',').map(str::to_string).collect();
    let (client, printer) = ctx.connect().await?;
    check_peer_urls(&urls)?;
    let req = MemberAddRequest {
        peer_ur_ls: urls.clone(),
        is_learner: learner,
    };
    let resp = client.unary(client.cluster().member_add(req)).await?;
    emit(&printer.member_add(&resp)?)?;
    if printer.format() != Format::Simple {
        return Ok(());
    }
    // The settings to start the new member with, from a member list of the member that
    // added it (after a failover another member's list may not show it yet: a quorum read
    // brings the answering member up to date first).
    let new_id = resp.member.as_ref().map_or(0, |m| m.id);
    let mut want_member = resp.header.map_or(0, |h| h.member_id);
    let mut list = client
        .unary(client.cluster().member_list(MemberListRequest {
            linearizable: false,
        }))
        .await?;
    for _ in 0..10 {
        if list.header.map_or(0, |h| h.member_id) == want_member {
            break;
        }
        let get = client
            .unary(client.kv().range(RangeRequest {
                key: b"_".to_vec(),
                ..Default::default()
            }))
            .await?;
        want_member = get.header.map_or(0, |h| h.member_id);
        list = client
            .unary(client.cluster().member_list(MemberListRequest {
                linearizable: false,
            }))
            .await?;
    }
    let mut cluster = Vec::new();
    for m in &list.members {
        for u in &m.peer_ur_ls {
            let n = if m.id == new_id {
                name.as_str()
            } else {
                m.name.as_str()
            };
            cluster.push(format!("{n}={u}"));
        }
    }
    emit(&notices::member_add_env(&name, &cluster, &urls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_are_hex() {
        assert_eq!(
            member_id(&["8e9e05c52164694d".into()]).unwrap(),
            0x8e9e05c52164694d
        );
        assert_eq!(
            member_id(&[]).unwrap_err().to_string(),
            "member ID is not provided"
        );
        assert_eq!(
            member_id(&["zz".into()]).unwrap_err().to_string(),
            "bad member ID arg (strconv.ParseUint: parsing \"zz\": invalid syntax), expecting ID in Hex"
        );
    }

    #[test]
    fn peer_urls_follow_etcd_rules() {
        let check = |u: &str| check_peer_urls(&[u.to_string()]).map_err(|e| e.to_string());
        assert!(check("http://127.0.0.1:2380").is_ok());
        assert!(check("https://[::1]:2380").is_ok());
        assert_eq!(
            check("foo"),
            Err("URL scheme must be http, https, unix, or unixs: foo".into())
        );
        assert_eq!(
            check("http://127.0.0.1"),
            Err("URL address does not have the form \"host:port\": http://127.0.0.1".into())
        );
        assert_eq!(
            check("http://h:1/x"),
            Err("URL must not contain a path: http://h:1/x".into())
        );
    }
}
