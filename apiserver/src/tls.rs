//! TLS: the rustls server configuration (with optional client-certificate authentication)
//! and self-signed certificates for a local cluster (`kvstore-apiserver certs`).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::authn::User;

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("reading {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("parsing {}: {e}", path.display()))
}

/// The server config for `--tls-cert-file`, `--tls-private-key-file` and `--client-ca-file`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(cert)?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("reading {}: {e}", key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca)? {
                roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The identity in a verified client certificate: CommonName is the user, Organizations
/// are the groups (Kubernetes' x509 authenticator).
pub fn cert_user(cert: &CertificateDer<'_>) -> Option<User> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    Some(User {
        name,
        uid: String::new(),
        groups,
    })
}

/// Writes a CA, a serving certificate for `hosts`, an admin client certificate and an admin
/// kubeconfig for `server` into `dir`.
pub fn generate(dir: &Path, hosts: &[String], server: &str) -> Result<(), String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let err = |e: rcgen::Error| e.to_string();

    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kvstore-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).map_err(err)?;

    let issue =
        |cn: &str, org: Option<&str>, sans: Vec<String>| -> Result<(String, String), String> {
            let key = KeyPair::generate().map_err(err)?;
            let mut p = CertificateParams::new(sans).map_err(err)?;
            p.distinguished_name.push(DnType::CommonName, cn);
            if let Some(o) = org {
                p.distinguished_name.push(DnType::OrganizationName, o);
            }
            let cert = p.signed_by(&key, &ca, &ca_key).map_err(err)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
    let (srv_cert, srv_key) = issue("kube-apiserver", None, hosts.to_vec())?;
    let (adm_cert, adm_key) = issue("admin", Some("system:masters"), Vec::new())?;

    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text)
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    write("ca.crt", &ca.pem())?;
    write("ca.key", &ca_key.serialize_pem())?;
    write("apiserver.crt", &srv_cert)?;
    write("apiserver.key", &srv_key)?;
    write("admin.crt", &adm_cert)?;
    write("admin.key", &adm_key)?;
    let abs = std::fs::canonicalize(dir).map_err(|e| e.to_string())?;
    let p = |f: &str| abs.join(f).display().to_string();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kvstore\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: kvstore\n  context:\n    cluster: kvstore\n    user: admin\n    namespace: default\ncurrent-context: kvstore\n",
        ca = p("ca.crt"),
        cert = p("admin.crt"),
        key = p("admin.key"),
    );
    write("admin.kubeconfig", &kubeconfig)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_admin_cert_maps_to_system_masters() {
        let dir = tempfile::tempdir().expect("tempdir");
        generate(
            dir.path(),
            &["127.0.0.1".into(), "localhost".into()],
            "https://127.0.0.1:6443",
        )
        .expect("generate");
        let certs = read_certs(&dir.path().join("admin.crt")).expect("admin cert");
        let user = cert_user(&certs[0]).expect("identity");
        assert_eq!(user.name, "admin");
        assert_eq!(user.groups, vec!["system:masters".to_string()]);
        server_config(
            &dir.path().join("apiserver.crt"),
            &dir.path().join("apiserver.key"),
            Some(&dir.path().join("ca.crt")),
        )
        .expect("server config loads");
    }
}
