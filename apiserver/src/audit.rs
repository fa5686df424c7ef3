//! The audit log: one JSON line (`audit.k8s.io/v1` `Event`, level Metadata) per write
//! request: who, what, when, and the response code.

use std::io::Write;
use std::path::Path;

use parking_lot::Mutex;
use serde_json::json;

use crate::authn::User;
use crate::authz::Attributes;

/// An append-only audit file.
#[derive(Debug)]
pub struct AuditLog {
    file: Mutex<std::fs::File>,
}

impl AuditLog {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(AuditLog {
            file: Mutex::new(file),
        })
    }

    /// Records one request; errors writing the log are logged, not returned (the request
    /// already happened).
    pub fn record(&self, user: &User, a: &Attributes, uri: &str, received: &str, code: u16) {
        let event = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "Metadata",
            "auditID": uuid::Uuid::new_v4().to_string(),
            "stage": "ResponseComplete",
            "requestURI": uri,
            "verb": a.verb,
            "user": {"username": user.name, "uid": user.uid, "groups": user.groups},
            "objectRef": {
                "resource": a.resource.split('/').next().unwrap_or(""),
                "subresource": a.resource.split_once('/').map(|(_, s)| s).unwrap_or(""),
                "namespace": a.namespace,
                "name": a.name,
                "apiGroup": a.group,
            },
            "responseStatus": {"code": code},
            "requestReceivedTimestamp": received,
            "stageTimestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        });
        let mut f = self.file.lock();
        if let Err(err) = writeln!(f, "{event}") {
            tracing::error!(cause = %err, "writing the audit log failed");
        }
    }
}
