//! A throw-away PKI for TLS tests: certificate authorities and the certificates they
//! sign, as PEM (and written to files for node configs).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};

/// A certificate and its private key, PEM.
#[derive(Clone, Debug)]
pub struct Pem {
    /// Certificate (PEM).
    pub cert: String,
    /// Private key (PEM, PKCS#8).
    pub key: String,
}

impl Pem {
    /// Writes `<dir>/<name>.crt` and `<dir>/<name>.key`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert).unwrap();
        std::fs::write(&key, &self.key).unwrap();
        (cert, key)
    }
}

/// A certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `<dir>/<name>.crt`.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.crt"));
        std::fs::write(&path, self.cert_pem()).unwrap();
        path
    }

    /// A leaf certificate with common name `cn`, valid for `localhost` and 127.0.0.1
    /// (usable as a server and as a client certificate).
    pub fn issue(&self, cn: &str) -> Pem {
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        p.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// A secured rig: nodes on mutual TLS with certificate identities (members as role
/// `node`, the harness's own client as `admin`), everything written under a directory.
#[derive(Clone, Debug)]
pub struct SecureRig {
    /// `[tls]` and `[auth]` sections for every node's config.
    pub node_toml: String,
    /// CA certificate the harness's clients verify nodes with.
    pub ca_file: PathBuf,
    /// The harness's client certificate (identity `quiver-tool`, role admin).
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// Name the certificates are valid for (nodes bind other addresses in namespaces).
    pub server_name: String,
}

impl SecureRig {
    /// Creates a CA, a node certificate (`quiver-node`) and a client certificate
    /// (`quiver-tool`) under `dir`.
    pub fn create(dir: &Path) -> SecureRig {
        std::fs::create_dir_all(dir).unwrap();
        let ca = Ca::new("quiver rig CA");
        let ca_file = ca.write(dir, "ca");
        let (node_cert, node_key) = ca.issue("quiver-node").write(dir, "node");
        let (client_cert, client_key) = ca.issue("quiver-tool").write(dir, "client");
        let node_toml = format!(
            r#"[tls]
cert_file = "{cert}"
key_file = "{key}"
ca_file = "{ca}"
client_auth = "required"
server_name = "localhost"
[auth]
enabled = true
[[auth.identities]]
name = "quiver-node"
role = "node"
[[auth.identities]]
name = "quiver-tool"
role = "admin"
"#,
            cert = node_cert.display(),
            key = node_key.display(),
            ca = ca_file.display(),
        );
        SecureRig {
            node_toml,
            ca_file,
            client_cert,
            client_key,
            server_name: "localhost".into(),
        }
    }
}
