//! `cargo xtask image`: the nodelens container image, built without a docker engine, the
//! way ko and jib build theirs.
//!
//! The image is the static binary and nothing else (`FROM scratch`): one layer holding
//! `/nodelens`, the entrypoint. Both architectures' images go under one OCI image index,
//! written as an OCI image layout (`target/image/oci/`) and as an `oci-archive` tarball
//! (`target/image/nodelens-<version>.oci.tar`) that skopeo pushes and containerd imports.
//!
//! It is reproducible: every timestamp is the commit time of HEAD, tar headers carry no
//! owner names, gzip no time, and JSON keys are sorted, so two builds of one commit in the
//! same checkout give the same digest. (The binaries carry the build's source paths, so a
//! checkout elsewhere, or another machine, may give other binaries and another digest.)
//! A build from a work tree with changes is labelled `<commit>-dirty`.
//!
//! The Dockerfile builds the same image from the binaries this leaves in
//! `target/image/<arch>/nodelens`, with the same labels ([`LABELS`]; a unit test keeps the
//! two equal). This command is the canonical build.
use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{kernels, step, workspace_root};

/// The name the DaemonSet pulls (manifests/daemonset.yaml); overlays rename it with
/// kustomize `images:`.
pub const IMAGE_NAME: &str = "ghcr.io/nodelens/nodelens";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// OCI labels of the image config, also the Dockerfile's `LABEL`s. `version` is added from
/// [`VERSION`], `revision` and `created` from the commit.
pub const LABELS: &[(&str, &str)] = &[
    ("org.opencontainers.image.title", "nodelens"),
    (
        "org.opencontainers.image.description",
        "eBPF node agent for Kubernetes: run-queue, disk and memory latency per node and per pod",
    ),
    (
        "org.opencontainers.image.source",
        "https://github.com/nodelens/nodelens",
    ),
    ("org.opencontainers.image.licenses", "MIT OR Apache-2.0"),
];

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The commit the image is built from: its id and time.
pub struct Source {
    pub revision: String,
    /// Seconds since the epoch (the commit time): every timestamp in the image.
    pub epoch: u64,
}

impl Source {
    pub fn head() -> Result<Source> {
        let out = Command::new("git")
            .args(["log", "-1", "--format=%H %ct"])
            .current_dir(workspace_root())
            .output()
            .context("git log")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (revision, epoch) = text
            .trim()
            .split_once(' ')
            .context("git log printed no commit: is this a git clone?")?;
        Ok(Source {
            revision: revision.to_owned(),
            epoch: epoch.parse().context("commit time")?,
        })
    }
}

/// One platform's binary.
pub struct Binary {
    pub arch: kernels::Arch,
    pub path: PathBuf,
}

/// What a build wrote.
pub struct Built {
    /// `sha256:…` of the image index: the multi-arch image's digest.
    pub digest: String,
    pub layout: PathBuf,
    pub archive: PathBuf,
}

pub fn image() -> Result<()> {
    let mut binaries = Vec::new();
    for arch in [kernels::Arch::Amd64, kernels::Arch::Arm64] {
        if arch == kernels::Arch::Arm64 {
            crate::apt_install(&[
                "gcc-aarch64-linux-gnu".to_owned(),
                "libc6-dev-arm64-cross".to_owned(),
            ])?;
            crate::install_arm64_target()?;
        }
        binaries.push(Binary {
            arch,
            path: kernels::build_static(arch)?,
        });
    }
    assemble(&binaries).map(|_| ())
}

/// The image of already built static binaries, under target/image; checked with skopeo
/// when it is installed. Returns the archive.
pub fn assemble(binaries: &[Binary]) -> Result<PathBuf> {
    let source = Source::head()?;
    let dirty = !Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(workspace_root())
        .output()?
        .stdout
        .is_empty();
    let mut source = source;
    if dirty {
        step(
            "note: the work tree has changes: the image is built from them, labelled <HEAD>-dirty",
        );
        source.revision.push_str("-dirty");
    }
    let out = workspace_root().join("target/image");
    // Binaries of another build must not stay behind for the Dockerfile.
    for arch in [kernels::Arch::Amd64, kernels::Arch::Arm64] {
        let stale = out.join(arch.debian());
        if stale.exists() {
            fs::remove_dir_all(&stale)?;
        }
    }
    // Where the Dockerfile takes the binaries from.
    let mut copies = Vec::new();
    for binary in binaries {
        let dir = out.join(binary.arch.debian());
        fs::create_dir_all(&dir)?;
        let path = dir.join("nodelens");
        fs::copy(&binary.path, &path)
            .with_context(|| format!("copy {} to {}", binary.path.display(), path.display()))?;
        copies.push(Binary {
            arch: binary.arch,
            path,
        });
    }
    let built = write_image(&copies, &source, &out)?;
    step(&format!(
        "image {IMAGE_NAME}:{VERSION} ({}), digest {}",
        binaries
            .iter()
            .map(|b| b.arch.debian())
            .collect::<Vec<_>>()
            .join(", "),
        built.digest
    ));
    step(&format!("OCI layout: {}", built.layout.display()));
    step(&format!("archive: {}", built.archive.display()));
    if Command::new("skopeo").arg("--version").output().is_ok() {
        check_with_skopeo(&built, binaries)?;
    } else {
        step("skopeo is not installed: the archive is not inspected (apt-get install skopeo)");
    }
    let relative = built
        .archive
        .strip_prefix(workspace_root())
        .unwrap_or(&built.archive);
    step(&format!(
        "push every platform with: skopeo copy --all oci-archive:{} docker://<registry>/nodelens:{VERSION}",
        relative.display()
    ));
    Ok(built.archive)
}

/// What a user would check: skopeo reads the archive as an index of every platform built.
fn check_with_skopeo(built: &Built, binaries: &[Binary]) -> Result<()> {
    let raw = inspect(&built.archive)?;
    let index: Value = serde_json::from_str(&raw).context("skopeo inspect --raw: not JSON")?;
    let platforms: Vec<&str> = index["manifests"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|d| d["platform"]["architecture"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let wanted: Vec<&str> = binaries.iter().map(|b| b.arch.debian()).collect();
    if platforms != wanted {
        bail!("skopeo reads platforms {platforms:?} from the archive, not {wanted:?}");
    }
    step(&format!(
        "skopeo inspect: an index of {} with the OCI labels",
        platforms.join(" and ")
    ));
    Ok(())
}

/// Writes the index of `binaries`' images as an OCI layout and archive under `out`.
pub fn write_image(binaries: &[Binary], source: &Source, out: &Path) -> Result<Built> {
    let layout = out.join("oci");
    if layout.exists() {
        fs::remove_dir_all(&layout)?;
    }
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let created = rfc3339(source.epoch);
    let mut annotations = BTreeMap::new();
    for (k, v) in LABELS {
        annotations.insert(k.to_string(), v.to_string());
    }
    annotations.insert("org.opencontainers.image.version".into(), VERSION.into());
    annotations.insert(
        "org.opencontainers.image.revision".into(),
        source.revision.clone(),
    );
    annotations.insert("org.opencontainers.image.created".into(), created.clone());

    let mut manifests = Vec::new();
    for binary in binaries {
        let program =
            fs::read(&binary.path).with_context(|| format!("reading {}", binary.path.display()))?;
        let tar = layer_tar(&program, source.epoch)?;
        let diff_id = sha256(&tar);
        let gz = gzip(&tar)?;
        let layer = put_blob(&blobs, LAYER, &gz)?;
        let mut config = json!({
            "architecture": binary.arch.debian(),
            "os": "linux",
            "created": created,
            "config": {
                "Entrypoint": ["/nodelens"],
                "ExposedPorts": {"9560/tcp": {}},
                "Labels": annotations,
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "created_by": "cargo xtask image"}],
        });
        if let Some(variant) = platform(binary.arch).get("variant") {
            config["variant"] = variant.clone();
        }
        let config = put_blob(&blobs, CONFIG, &serde_json::to_vec(&config)?)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": config,
            "layers": [layer],
            "annotations": annotations,
        });
        let mut descriptor = put_blob(&blobs, MANIFEST, &serde_json::to_vec(&manifest)?)?;
        descriptor["platform"] = platform(binary.arch);
        manifests.push(descriptor);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": manifests,
        "annotations": annotations,
    });
    let mut index_descriptor = put_blob(&blobs, INDEX, &serde_json::to_vec(&index)?)?;
    let digest = index_descriptor["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The names skopeo (a bare tag) and containerd (the full name) import it under.
    index_descriptor["annotations"] = json!({
        "org.opencontainers.image.ref.name": VERSION,
        "io.containerd.image.name": format!("{IMAGE_NAME}:{VERSION}"),
    });
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": [index_descriptor],
        }))?,
    )?;
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let archive = out.join(format!("nodelens-{VERSION}.oci.tar"));
    archive_layout(&layout, &archive, source.epoch)?;
    Ok(Built {
        digest,
        layout,
        archive,
    })
}

fn platform(arch: kernels::Arch) -> Value {
    match arch {
        kernels::Arch::Amd64 => json!({"architecture": "amd64", "os": "linux"}),
        kernels::Arch::Arm64 => json!({"architecture": "arm64", "os": "linux", "variant": "v8"}),
    }
}

/// Stores a blob under its digest; returns its descriptor.
fn put_blob(blobs: &Path, media_type: &str, data: &[u8]) -> Result<Value> {
    let digest = sha256(data);
    let hex = digest.trim_start_matches("sha256:");
    fs::write(blobs.join(hex), data)?;
    Ok(json!({"mediaType": media_type, "digest": digest, "size": data.len()}))
}

pub fn sha256(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut s = String::from("sha256:");
    for b in d.as_ref() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A tar header with nothing from the build machine in it: root-owned, no names, `mtime`.
fn header(
    path: &str,
    size: u64,
    mode: u32,
    kind: tar::EntryType,
    mtime: u64,
) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)?;
    h.set_size(size);
    h.set_mode(mode);
    h.set_entry_type(kind);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_cksum();
    Ok(h)
}

/// The image's one layer: `/nodelens`, executable.
fn layer_tar(program: &[u8], epoch: u64) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let h = header(
        "nodelens",
        program.len() as u64,
        0o755,
        tar::EntryType::Regular,
        epoch,
    )?;
    tar.append(&h, program)?;
    Ok(tar.into_inner()?)
}

/// gzip with no name and no time in its header, at a fixed level.
fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::new(6));
    gz.write_all(data)?;
    Ok(gz.finish()?)
}

/// The layout as an `oci-archive`: a tar of its files, in sorted order.
fn archive_layout(layout: &Path, archive: &Path, epoch: u64) -> Result<()> {
    let mut tar = tar::Builder::new(fs::File::create(archive)?);
    for dir in ["blobs/", "blobs/sha256/"] {
        tar.append(
            &header(dir, 0, 0o755, tar::EntryType::Directory, epoch)?,
            std::io::empty(),
        )?;
    }
    let mut files = vec!["oci-layout".to_owned(), "index.json".to_owned()];
    let mut blobs: Vec<String> = fs::read_dir(layout.join("blobs/sha256"))?
        .map(|e| Ok(format!("blobs/sha256/{}", e?.file_name().to_string_lossy())))
        .collect::<Result<_>>()?;
    blobs.sort();
    files.extend(blobs);
    for name in files {
        let data = fs::read(layout.join(&name))?;
        tar.append(
            &header(
                &name,
                data.len() as u64,
                0o644,
                tar::EntryType::Regular,
                epoch,
            )?,
            data.as_slice(),
        )?;
    }
    tar.into_inner()?.flush()?;
    Ok(())
}

/// `YYYY-MM-DDThh:mm:ssZ` of seconds since the epoch (Howard Hinnant's civil_from_days).
fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Checks an archive with skopeo, as a user would: both platforms and the labels.
pub fn inspect(archive: &Path) -> Result<String> {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", archive.display()))
        .output()
        .context("skopeo")?;
    if !out.status.success() {
        bail!(
            "skopeo inspect: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_binaries(dir: &Path) -> Vec<Binary> {
        [kernels::Arch::Amd64, kernels::Arch::Arm64]
            .into_iter()
            .map(|arch| {
                let path = dir.join(arch.debian());
                fs::write(&path, format!("not really a {} program", arch.debian())).unwrap();
                Binary { arch, path }
            })
            .collect()
    }

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("nodelens-image-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn two_builds_of_one_commit_give_one_digest_and_a_valid_index() {
        let dir = temp("repro");
        let binaries = fake_binaries(&dir);
        let source = Source {
            revision: "0123456789abcdef".into(),
            epoch: 1_764_633_600,
        };
        let a = write_image(&binaries, &source, &dir.join("a")).unwrap();
        let b = write_image(&binaries, &source, &dir.join("b")).unwrap();
        assert_eq!(a.digest, b.digest);
        assert_eq!(fs::read(&a.archive).unwrap(), fs::read(&b.archive).unwrap());
        // A new commit is a new image.
        let later = Source {
            epoch: source.epoch + 1,
            ..source
        };
        assert_ne!(
            write_image(&binaries, &later, &dir.join("c"))
                .unwrap()
                .digest,
            a.digest
        );

        // The index names both platforms, and each manifest's blobs are there with the
        // digest and size it states.
        let blob = |digest: &str| {
            fs::read(
                a.layout
                    .join("blobs/sha256")
                    .join(digest.trim_start_matches("sha256:")),
            )
            .unwrap()
        };
        let index: Value = serde_json::from_slice(&blob(&a.digest)).unwrap();
        let platforms: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["platform"]["architecture"].as_str().unwrap())
            .collect();
        assert_eq!(platforms, ["amd64", "arm64"]);
        for m in index["manifests"].as_array().unwrap() {
            let data = blob(m["digest"].as_str().unwrap());
            assert_eq!(sha256(&data), m["digest"].as_str().unwrap());
            assert_eq!(data.len() as u64, m["size"].as_u64().unwrap());
            let manifest: Value = serde_json::from_slice(&data).unwrap();
            let config: Value =
                serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap()))
                    .unwrap();
            assert_eq!(config["architecture"], m["platform"]["architecture"]);
            assert_eq!(config["config"]["Entrypoint"], json!(["/nodelens"]));
            assert_eq!(
                config["config"]["Labels"]["org.opencontainers.image.version"],
                VERSION
            );
            assert_eq!(config["created"], "2025-12-02T00:00:00Z");
            // The layer unpacks to /nodelens, the platform's own binary.
            let gz = blob(manifest["layers"][0]["digest"].as_str().unwrap());
            let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(gz.as_slice()));
            let mut entries = tar.entries().unwrap();
            let mut entry = entries.next().unwrap().unwrap();
            assert_eq!(entry.path().unwrap().to_str(), Some("nodelens"));
            assert_eq!(entry.header().mode().unwrap(), 0o755);
            let mut content = String::new();
            std::io::Read::read_to_string(&mut entry, &mut content).unwrap();
            assert!(content.contains(config["architecture"].as_str().unwrap()));
            assert!(entries.next().is_none());
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_dockerfile_builds_the_same_image() {
        let dockerfile = fs::read_to_string(workspace_root().join("Dockerfile")).unwrap();
        for (key, value) in LABELS {
            assert!(
                dockerfile.contains(&format!("{key}=\"{value}\"")),
                "the Dockerfile lacks LABEL {key}=\"{value}\""
            );
        }
        assert!(dockerfile.contains(&format!("org.opencontainers.image.version=\"{VERSION}\"")));
        assert!(dockerfile.contains("FROM scratch"));
        assert!(dockerfile.contains("COPY target/image/${TARGETARCH}/nodelens /nodelens"));
        assert!(dockerfile.contains("ENTRYPOINT [\"/nodelens\"]"));
        assert!(dockerfile.contains("EXPOSE 9560"));
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
    }
}
