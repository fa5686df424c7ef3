//! etcdctl's `table` format, and the rows it shares with the `simple` format.
//!
//! etcdctl draws tables with olekukonko/tablewriter (the 2017 revision etcd 3.4 vendors),
//! right-aligned. Reproduced here: upper-case headers centred (extra space on the right),
//! cells right-aligned, and cells wider than 30 columns word-wrapped with tablewriter's
//! minimum-raggedness algorithm onto extra lines of the same row.

use kvstore_proto::etcdserverpb::{Member, MemberListResponse};

use super::{EpHashKv, EpHealth, EpStatus};
use crate::go::humanize_bytes;

/// tablewriter's default maximum column width before wrapping.
const MAX_COL_WIDTH: usize = 30;

/// The member rows of `member list` (ID, status, name, peer and client URLs, learner).
pub(super) fn member_rows(members: &[Member]) -> Vec<Vec<String>> {
    members
        .iter()
        .map(|m| {
            let status = if m.name.is_empty() {
                "unstarted"
            } else {
                "started"
            };
            vec![
                format!("{:x}", m.id),
                status.to_string(),
                m.name.clone(),
                m.peer_ur_ls.join(","),
                m.client_ur_ls.join(","),
                m.is_learner.to_string(),
            ]
        })
        .collect()
}

/// The rows of `endpoint status`.
pub(super) fn endpoint_status_rows(list: &[EpStatus]) -> Vec<Vec<String>> {
    list.iter()
        .map(|s| {
            let r = &s.resp;
            let member_id = r.header.map_or(0, |h| h.member_id);
            vec![
                s.endpoint.clone(),
                format!("{member_id:x}"),
                r.version.clone(),
                humanize_bytes(r.db_size.max(0) as u64),
                (r.leader == member_id).to_string(),
                r.is_learner.to_string(),
                r.raft_term.to_string(),
                r.raft_index.to_string(),
                r.raft_applied_index.to_string(),
                r.errors.join(", "),
            ]
        })
        .collect()
}

pub(super) fn member_list(r: &MemberListResponse) -> String {
    render(
        &[
            "ID",
            "Status",
            "Name",
            "Peer Addrs",
            "Client Addrs",
            "Is Learner",
        ],
        &member_rows(&r.members),
    )
}

pub(super) fn endpoint_status(list: &[EpStatus]) -> String {
    render(
        &[
            "endpoint",
            "ID",
            "version",
            "db size",
            "is leader",
            "is learner",
            "raft term",
            "raft index",
            "raft applied index",
            "errors",
        ],
        &endpoint_status_rows(list),
    )
}

pub(super) fn endpoint_hashkv(list: &[EpHashKv]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|h| vec![h.endpoint.clone(), h.resp.hash.to_string()])
        .collect();
    render(&["endpoint", "hash"], &rows)
}

pub(super) fn endpoint_health(list: &[EpHealth]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|h| {
            vec![
                h.endpoint.clone(),
                h.health.to_string(),
                h.took.clone(),
                h.error.clone(),
            ]
        })
        .collect();
    render(&["endpoint", "health", "took", "error"], &rows)
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// Draws a table like tablewriter's `Render` with `SetAlignment(ALIGN_RIGHT)`.
pub(super) fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let headers: Vec<String> = header
        .iter()
        .map(|h| h.replace('_', " ").to_uppercase())
        .collect();
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|h| width(h).min(MAX_COL_WIDTH))
        .collect();
    // Cells are measured (and wrapped) row by row, each against the width reached so far,
    // as tablewriter does when rows are appended.
    let mut cells: Vec<Vec<Vec<String>>> = Vec::with_capacity(rows.len());
    for row in rows {
        let mut lines_of_row = Vec::with_capacity(row.len());
        for (col, cell) in row.iter().enumerate() {
            if col >= widths.len() {
                widths.push(0);
            }
            let w = width(cell).min(MAX_COL_WIDTH);
            if widths[col] < w {
                widths[col] = w;
            }
            let lines = wrap(cell, widths[col]);
            let longest = lines.iter().map(|l| width(l)).max().unwrap_or(0);
            if longest > widths[col] {
                widths[col] = longest;
            }
            lines_of_row.push(lines);
        }
        cells.push(lines_of_row);
    }

    let mut out = String::new();
    let rule = {
        let mut s = String::from("+");
        for w in &widths {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s.push('\n');
        s
    };
    out.push_str(&rule);
    out.push('|');
    for (h, w) in headers.iter().zip(&widths) {
        out.push(' ');
        out.push_str(&center(h, *w));
        out.push_str(" |");
    }
    out.push('\n');
    out.push_str(&rule);
    for row in &cells {
        let height = row.iter().map(Vec::len).max().unwrap_or(1);
        for line in 0..height {
            out.push('|');
            for (col, w) in widths.iter().enumerate() {
                let text = row
                    .get(col)
                    .and_then(|c| c.get(line))
                    .map_or("", String::as_str);
                out.push(' ');
                out.push_str(&" ".repeat(w.saturating_sub(width(text))));
                out.push_str(text);
                out.push_str(" |");
            }
            out.push('\n');
        }
    }
    out.push_str(&rule);
    out
}

/// Centres `s` in `w` columns, the odd space going to the right.
fn center(s: &str, w: usize) -> String {
    let gap = w.saturating_sub(width(s));
    let left = gap / 2;
    format!("{}{s}{}", " ".repeat(left), " ".repeat(gap - left))
}

/// tablewriter's `WrapString`: splits on single spaces (newlines count as spaces) and
/// breaks the words into lines of at most `limit` columns with the least raggedness.
fn wrap(s: &str, limit: usize) -> Vec<String> {
    let words: Vec<String> = s
        .replace('\n', " ")
        .split(' ')
        .map(str::to_string)
        .collect();
    let limit = words.iter().map(|w| width(w)).fold(limit, usize::max);
    wrap_words(&words, 1, limit, 100_000)
        .into_iter()
        .map(|line| line.join(" "))
        .collect()
}

/// tablewriter's `WrapWords`: dynamic programming over break points, minimising the sum of
/// squared slack per line, with a penalty for lines over the limit.
fn wrap_words(words: &[String], space: usize, limit: usize, penalty: i64) -> Vec<Vec<String>> {
    let n = words.len();
    if n == 0 {
        return vec![vec![String::new()]];
    }
    // length[i][j]: columns taken by words i..=j on one line.
    let mut length = vec![vec![0usize; n]; n];
    for i in 0..n {
        length[i][i] = width(&words[i]);
        for j in i + 1..n {
            length[i][j] = length[i][j - 1] + space + width(&words[j]);
        }
    }
    let mut next_break = vec![0usize; n];
    let mut cost = vec![i64::from(i32::MAX); n];
    for i in (0..n).rev() {
        if length[i][n - 1] <= limit || i == n - 1 {
            cost[i] = 0;
            next_break[i] = n;
        } else {
            for j in i + 1..n {
                let d = limit as i64 - length[i][j - 1] as i64;
                let mut c = d * d + cost[j];
                if length[i][j - 1] > limit {
                    c += penalty;
                }
                if c < cost[i] {
                    cost[i] = c;
                    next_break[i] = j;
                }
            }
        }
    }
    let mut lines = Vec::new();
    let mut i = 0;
    while i < n {
        lines.push(words[i..next_break[i]].to_vec());
        i = next_break[i];
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvstore_proto::etcdserverpb::{ResponseHeader, StatusResponse};

    #[test]
    fn member_table_matches_etcdctl() {
        let r = MemberListResponse {
            header: None,
            members: vec![
                Member {
                    id: 0x2e1259d415f2a040,
                    name: "default".into(),
                    peer_ur_ls: vec!["http://127.0.0.1:23800".into()],
                    client_ur_ls: vec!["http://127.0.0.1:23790".into()],
                    is_learner: false,
                },
                Member {
                    id: 0x5d4fcdda10591db7,
                    name: String::new(),
                    peer_ur_ls: vec![
                        "http://127.0.0.1:45001".into(),
                        "http://127.0.0.1:45002".into(),
                    ],
                    client_ur_ls: vec![],
                    is_learner: true,
                },
            ],
        };
        let expected = "\
+------------------+-----------+---------+-----------------------------------------------+------------------------+------------+
|        ID        |  STATUS   |  NAME   |                  PEER ADDRS                   |      CLIENT ADDRS      | IS LEARNER |
+------------------+-----------+---------+-----------------------------------------------+------------------------+------------+
| 2e1259d415f2a040 |   started | default |                        http://127.0.0.1:23800 | http://127.0.0.1:23790 |      false |
| 5d4fcdda10591db7 | unstarted |         | http://127.0.0.1:45001,http://127.0.0.1:45002 |                        |       true |
+------------------+-----------+---------+-----------------------------------------------+------------------------+------------+
";
        assert_eq!(member_list(&r), expected);
    }

    #[test]
    fn long_cells_wrap_at_thirty_columns_like_tablewriter() {
        let list = [EpStatus {
            endpoint: "127.0.0.1:34791".into(),
            resp: StatusResponse {
                header: Some(ResponseHeader {
                    member_id: 0x3368474bd37dfece,
                    ..Default::default()
                }),
                version: "3.4.23".into(),
                db_size: 262144,
                leader: 0x3368474bd37dfece,
                raft_index: 16,
                raft_term: 2,
                raft_applied_index: 16,
                errors: vec!["memberID:3704289084508602062 alarm:NOSPACE ".into()],
                ..Default::default()
            },
        }];
        let expected = "\
+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------------------------------+
|    ENDPOINT     |        ID        | VERSION | DB SIZE | IS LEADER | IS LEARNER | RAFT TERM | RAFT INDEX | RAFT APPLIED INDEX |             ERRORS             |
+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------------------------------+
| 127.0.0.1:34791 | 3368474bd37dfece |  3.4.23 |  262 kB |      true |      false |         2 |         16 |                 16 |   memberID:3704289084508602062 |
|                 |                  |         |         |           |            |           |            |                    |                 alarm:NOSPACE  |
+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------------------------------+
";
        assert_eq!(endpoint_status(&list), expected);
    }

    #[test]
    fn health_table_right_aligns_cells() {
        let list = [EpHealth {
            endpoint: "127.0.0.1:23790".into(),
            health: true,
            took: "3.586575ms".into(),
            error: String::new(),
        }];
        let expected = "\
+-----------------+--------+------------+-------+
|    ENDPOINT     | HEALTH |    TOOK    | ERROR |
+-----------------+--------+------------+-------+
| 127.0.0.1:23790 |   true | 3.586575ms |       |
+-----------------+--------+------------+-------+
";
        assert_eq!(endpoint_health(&list), expected);
    }

    #[test]
    fn wrap_prefers_even_lines() {
        assert_eq!(wrap("aaa bbb ccc", 7), vec!["aaa bbb", "ccc"]);
        assert_eq!(wrap("short", 30), vec!["short"]);
        assert_eq!(wrap("", 6), vec![""]);
    }
}
