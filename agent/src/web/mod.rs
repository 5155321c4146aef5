//! `--web-config-file`: TLS, client certificates, basic auth and response headers in
//! exporter-toolkit's format (`config`), served with rustls (`tls`) and bcrypt (`auth`).
//!
//! Like exporter-toolkit, the file and the certificates it names are read again for each
//! new connection and each authenticated request, so a rotated certificate (cert-manager)
//! or a changed password takes effect without a restart. A file that stops parsing, or a
//! certificate that does not load, leaves the last good configuration in force and is
//! logged once per distinct problem. Whether the port speaks TLS is decided at startup.
pub mod auth;
pub mod config;
pub mod tls;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use rustls::ServerConfig;

pub use self::config::WebConfig;

/// The configuration in force for one connection or request.
#[derive(Clone)]
pub struct Snapshot {
    pub config: Arc<WebConfig>,
    /// `Some` on a TLS port.
    pub tls: Option<Arc<ServerConfig>>,
}

struct Current {
    /// The file's bytes and the TLS inputs' bytes the snapshot was built from.
    file: Vec<u8>,
    material: Vec<u8>,
    snapshot: Snapshot,
    /// The last problem logged, so that a broken file is logged once, not per connection.
    last_problem: Option<String>,
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The web configuration of the agent's port.
pub struct Web {
    path: Option<PathBuf>,
    current: Mutex<Current>,
    pub auth: auth::Authenticator,
}

impl Web {
    /// No file: plain HTTP, no authentication.
    pub fn plain() -> Self {
        Self {
            path: None,
            current: Mutex::new(Current {
                file: Vec::new(),
                material: Vec::new(),
                snapshot: Snapshot {
                    config: Arc::new(WebConfig::default()),
                    tls: None,
                },
                last_problem: None,
            }),
            auth: auth::Authenticator::default(),
        }
    }

    /// Reads the file at startup; any problem is a configuration error naming the key.
    pub fn load(path: Option<&Path>) -> Result<Self, String> {
        let Some(path) = path else {
            return Ok(Self::plain());
        };
        let (file, material, snapshot) = build(path)?;
        Ok(Self {
            path: Some(path.to_owned()),
            current: Mutex::new(Current {
                file,
                material,
                snapshot,
                last_problem: None,
            }),
            auth: auth::Authenticator::default(),
        })
    }

    pub fn tls(&self) -> bool {
        self.lock().snapshot.tls.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configuration now: re-read when the file or a certificate changed, else the
    /// last good one.
    pub fn snapshot(&self) -> Snapshot {
        let mut current = self.lock();
        let Some(path) = &self.path else {
            return current.snapshot.clone();
        };
        match changed(path, Some(&current)) {
            Ok(None) => current.last_problem = None,
            Ok(Some((file, material, snapshot))) => {
                tracing::info!(file = %path.display(), "web config reloaded");
                current.file = file;
                current.material = material;
                current.snapshot = snapshot;
                current.last_problem = None;
            }
            Err(problem) => {
                if current.last_problem.as_deref() != Some(problem.as_str()) {
                    tracing::warn!(
                        file = %path.display(),
                        "web config: {problem}; keeping the last good configuration"
                    );
                    current.last_problem = Some(problem);
                }
            }
        }
        current.snapshot.clone()
    }
}

type Built = (Vec<u8>, Vec<u8>, Snapshot);

/// Reads the file and its TLS inputs; `None` when nothing changed since `current`. A
/// change between plain HTTP and TLS is refused: the listener was chosen at startup.
fn changed(path: &Path, current: Option<&Current>) -> Result<Option<Built>, String> {
    let file = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let config = WebConfig::parse(&file, path.parent().unwrap_or(Path::new(".")))
        .map_err(|e| e.to_string())?;
    let material = match &config.tls {
        Some(t) => tls::material(t)?,
        None => Vec::new(),
    };
    if let Some(c) = current
        && c.file == file
        && c.material == material
    {
        return Ok(None);
    }
    let tls = match &config.tls {
        Some(t) => Some(tls::server_config(t)?),
        None => None,
    };
    if let Some(c) = current
        && c.snapshot.tls.is_some() != tls.is_some()
    {
        return Err("switching between plain HTTP and TLS needs a restart".into());
    }
    Ok(Some((
        file,
        material,
        Snapshot {
            config: Arc::new(config),
            tls,
        },
    )))
}

fn build(path: &Path) -> Result<Built, String> {
    changed(path, None)?.ok_or_else(|| "nothing was read".to_owned())
}
