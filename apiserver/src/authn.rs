//! Authentication: bearer tokens from `--token-auth-file` and client certificates signed by
//! `--client-ca-file` (verified during the TLS handshake; see `tls.rs`).

use std::collections::HashMap;
use std::path::Path;

use axum::http::HeaderMap;

use crate::error::ApiError;

/// Who is making a request.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn new(name: &str, groups: &[&str]) -> Self {
        User {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    /// The identity of requests without credentials.
    pub fn anonymous() -> Self {
        User::new("system:anonymous", &["system:unauthenticated"])
    }

    pub fn in_group(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x == g)
    }
}

/// How a connection was made: the transport's part of authentication.
#[derive(Debug, Clone)]
pub enum Transport {
    /// The plain-HTTP development port: no credentials means `system:unsecured`.
    Insecure,
    /// HTTPS; the verified client certificate's identity, if one was presented.
    Tls(Option<User>),
}

/// The token table.
#[derive(Debug, Default)]
pub struct Authenticator {
    tokens: HashMap<String, User>,
}

/// Splits one CSV line, honouring double quotes (`tok,user,uid,"g1,g2"`).
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().map(|f| f.trim().to_string()).collect()
}

impl Authenticator {
    /// Reads a kube-apiserver token file: `token,user,uid[,"group1,group2"]` per line.
    pub fn from_token_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading --token-auth-file {}: {e}", path.display()))?;
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f = csv_fields(line);
            if f.len() < 3 || f[0].is_empty() || f[1].is_empty() {
                return Err(format!(
                    "{}:{}: want token,user,uid[,groups]",
                    path.display(),
                    i + 1
                ));
            }
            let groups = f
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            tokens.insert(
                f[0].clone(),
                User {
                    name: f[1].clone(),
                    uid: f[2].clone(),
                    groups,
                },
            );
        }
        Ok(Authenticator { tokens })
    }

    /// Identifies the caller: a bearer token wins, then the client certificate; a bad token
    /// is 401 Unauthorized.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        transport: &Transport,
    ) -> Result<User, ApiError> {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let mut user = match (bearer, transport) {
            (Some(token), _) => self
                .tokens
                .get(token)
                .cloned()
                .ok_or_else(ApiError::unauthorized)?,
            (None, Transport::Tls(Some(cert_user))) => cert_user.clone(),
            (None, Transport::Tls(None)) => return Ok(User::anonymous()),
            (None, Transport::Insecure) => {
                return Ok(User::new(
                    "system:unsecured",
                    &["system:masters", "system:authenticated"],
                ))
            }
        };
        if !user.in_group("system:authenticated") {
            user.groups.push("system:authenticated".into());
        }
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_with_quoted_groups() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.csv");
        std::fs::write(&path, "t1,alice,1,\"dev,ops\"\nt2,bob,2\n").expect("write");
        let a = Authenticator::from_token_file(&path).expect("parse");
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer t1".parse().expect("header"));
        let u = a.authenticate(&h, &Transport::Tls(None)).expect("alice");
        assert_eq!(u.name, "alice");
        assert!(u.in_group("ops") && u.in_group("system:authenticated"));
        h.insert("authorization", "Bearer nope".parse().expect("header"));
        assert_eq!(
            a.authenticate(&h, &Transport::Tls(None))
                .expect_err("bad token")
                .code,
            401
        );
    }
}
