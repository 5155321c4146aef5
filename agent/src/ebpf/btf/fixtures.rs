//! Kernel BTF pruned to what nodelens reads, kept as test fixtures so that layout tests run
//! on any host: `agent/tests/fixtures/btf/<kernel release>.btf`. `cargo xtask
//! btf-fixtures` regenerates them from each kernel's full BTF, with the test-only BTF writer
//! below ([`prune`]): the agent never writes BTF, so the writer stays out of its build.
use std::{collections::HashMap, path::PathBuf};

use super::*;

/// Structs whose members some family resolves (its `KernelReads`), on any kernel.
pub fn structs() -> Vec<&'static str> {
    declared(|r| r.structs)
}

/// Tracepoints whose BTF prototypes some family reads.
pub fn tracepoints() -> Vec<&'static str> {
    declared(|r| r.tracepoints)
}

fn declared(
    part: fn(&crate::ebpf::family::KernelReads) -> &'static [&'static str],
) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = crate::ebpf::families::ALL
        .iter()
        .flat_map(|f| part(&f.kernel_reads()).iter().copied())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/btf")
}

/// Every fixture: (kernel release, bytes).
pub fn all() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir())
        .expect("tests/fixtures/btf")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let release = name.strip_suffix(".btf")?.to_owned();
            Some((release, std::fs::read(e.path()).ok()?))
        })
        .collect();
    out.sort();
    out
}

pub fn load(release: &str) -> Vec<u8> {
    std::fs::read(dir().join(format!("{release}.btf")))
        .unwrap_or_else(|e| panic!("fixture {release}.btf: {e}"))
}

/// Writes a BTF blob holding [`structs`] (every member, named member types reduced to byte
/// arrays of their size, anonymous structs and unions kept) and the `btf_trace_*`
/// prototypes of [`tracepoints`] (struct pointer arguments point at those structs, or at
/// empty ones of the same name).
pub fn prune(full: &Btf) -> Vec<u8> {
    let mut w = Writer::default();
    let u8_id = w.int("unsigned char", 1);
    let index_id = w.int("unsigned int", 4);
    let wanted = structs();
    let mut structs: HashMap<String, u32> = HashMap::new();
    for name in wanted {
        if let Some((id, _)) = full
            .all()
            .find(|(_, t)| t.kind == KIND_STRUCT && full.name(t.name_off) == name)
        {
            let new = w.copy_struct(full, id, u8_id, index_id);
            structs.insert(name.to_owned(), new);
        }
    }
    for event in tracepoints() {
        let want = format!("btf_trace_{event}");
        let Some((_, typedef)) = full
            .all()
            .find(|(_, t)| t.kind == KIND_TYPEDEF && full.name(t.name_off) == want)
        else {
            continue;
        };
        let Some(ptr) = full.get(typedef.size_or_type) else {
            continue;
        };
        let Some(proto) = full.get(ptr.size_or_type) else {
            continue;
        };
        let mut params = Vec::new();
        for i in 0..proto.vlen as usize {
            let Ok(ty) = u32_at(full.data, proto.extra + i * 8 + 4) else {
                continue;
            };
            params.push(w.describe_param(full, ty, &mut structs));
        }
        let proto_id = w.push(0, KIND_FUNC_PROTO, params.len() as u32, false, 0, &{
            let mut extra = Vec::new();
            for p in &params {
                extra.extend_from_slice(&0u32.to_le_bytes());
                extra.extend_from_slice(&p.to_le_bytes());
            }
            extra
        });
        let ptr_id = w.push(0, KIND_PTR, 0, false, proto_id, &[]);
        let name = w.string(&want);
        w.push(name, KIND_TYPEDEF, 0, false, ptr_id, &[]);
    }
    w.finish()
}

#[derive(Default)]
struct Writer {
    types: Vec<u8>,
    strings: Vec<u8>,
    count: u32,
    arrays: HashMap<u32, u32>,
    names: HashMap<String, u32>,
}

impl Writer {
    fn string(&mut self, s: &str) -> u32 {
        if self.strings.is_empty() {
            self.strings.push(0);
        }
        if s.is_empty() {
            return 0;
        }
        if let Some(off) = self.names.get(s) {
            return *off;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        self.names.insert(s.to_owned(), off);
        off
    }

    fn push(
        &mut self,
        name: u32,
        kind: u32,
        vlen: u32,
        flag: bool,
        size_or_type: u32,
        extra: &[u8],
    ) -> u32 {
        let info = (u32::from(flag) << 31) | (kind << 24) | (vlen & 0xffff);
        self.types.extend_from_slice(&name.to_le_bytes());
        self.types.extend_from_slice(&info.to_le_bytes());
        self.types.extend_from_slice(&size_or_type.to_le_bytes());
        self.types.extend_from_slice(extra);
        self.count += 1;
        self.count
    }

    fn int(&mut self, name: &str, size: u32) -> u32 {
        let n = self.string(name);
        let bits = (size * 8).min(128);
        self.push(n, KIND_INT, 0, false, size, &bits.to_le_bytes())
    }

    /// A `u8[size]` standing in for a named member type.
    fn bytes(&mut self, size: u32, u8_id: u32, index_id: u32) -> u32 {
        if let Some(id) = self.arrays.get(&size) {
            return *id;
        }
        let mut extra = Vec::new();
        for v in [u8_id, index_id, size] {
            extra.extend_from_slice(&v.to_le_bytes());
        }
        let id = self.push(0, KIND_ARRAY, 0, false, 0, &extra);
        self.arrays.insert(size, id);
        id
    }

    fn copy_struct(&mut self, full: &Btf, id: u32, u8_id: u32, index_id: u32) -> u32 {
        let Some(t) = full.get(id) else { return 0 };
        let mut members = Vec::new();
        for i in 0..t.vlen as usize {
            let at = t.extra + i * 12;
            let (Ok(name_off), Ok(member_type), Ok(offset)) = (
                u32_at(full.data, at),
                u32_at(full.data, at + 4),
                u32_at(full.data, at + 8),
            ) else {
                continue;
            };
            let name = full.name(name_off).to_owned();
            let resolved = full.resolve(member_type);
            let is_anon_aggregate = name.is_empty()
                && full
                    .get(resolved)
                    .is_some_and(|m| m.kind == KIND_STRUCT || m.kind == KIND_UNION);
            let new_type = if is_anon_aggregate {
                self.copy_struct(full, resolved, u8_id, index_id)
            } else {
                let size = full.size_of(member_type).unwrap_or(0);
                self.bytes(size, u8_id, index_id)
            };
            members.push((self.string(&name), new_type, offset));
        }
        let mut extra = Vec::new();
        for (name, ty, offset) in &members {
            for v in [*name, *ty, *offset] {
                extra.extend_from_slice(&v.to_le_bytes());
            }
        }
        let name = self.string(full.name(t.name_off));
        self.push(
            name,
            t.kind,
            members.len() as u32,
            t.kind_flag,
            t.size_or_type,
            &extra,
        )
    }

    /// A prototype parameter: `struct X *` keeps its struct's name, anything else becomes
    /// an int named like the resolved type.
    fn describe_param(&mut self, full: &Btf, ty: u32, structs: &mut HashMap<String, u32>) -> u32 {
        if ty == 0 {
            return 0;
        }
        let resolved = full.resolve(ty);
        let Some(t) = full.get(resolved) else {
            return 0;
        };
        if t.kind == KIND_PTR {
            let target = full.resolve(t.size_or_type);
            let pointee = match full.get(target) {
                Some(s) if s.kind == KIND_STRUCT => {
                    let name = full.name(s.name_off).to_owned();
                    match structs.get(&name) {
                        Some(id) => *id,
                        None => {
                            let n = self.string(&name);
                            let id = self.push(n, KIND_STRUCT, 0, false, 0, &[]);
                            structs.insert(name, id);
                            id
                        }
                    }
                }
                _ => 0,
            };
            return self.push(0, KIND_PTR, 0, false, pointee, &[]);
        }
        let size = full.size_of(resolved).unwrap_or(8);
        let name = full.name(t.name_off).to_owned();
        self.int(&name, size)
    }

    fn finish(mut self) -> Vec<u8> {
        self.string("");
        let mut out = Vec::new();
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            self.types.len() as u32,
            self.types.len() as u32,
            self.strings.len() as u32,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

/// Regenerates the fixtures from full BTF blobs in `NODELENS_BTF_SOURCES`
/// (`<release>.btf`). Run by `cargo xtask btf-fixtures`.
#[test]
#[ignore = "regenerates fixtures; cargo xtask btf-fixtures runs it"]
fn regenerate() {
    let sources =
        PathBuf::from(std::env::var("NODELENS_BTF_SOURCES").expect("NODELENS_BTF_SOURCES"));
    std::fs::create_dir_all(dir()).unwrap();
    for entry in std::fs::read_dir(&sources).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".btf") {
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap();
        let full = Btf::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let pruned = prune(&full);
        let check = Btf::parse(&pruned).unwrap();
        for s in structs() {
            if let (Ok(a), Ok(b)) = (
                full.member(s, &["pid", "__data_len", "id", "kn"]),
                check.member(s, &["pid", "__data_len", "id", "kn"]),
            ) {
                assert_eq!(a, b, "{name}: {s}");
            }
        }
        std::fs::write(dir().join(&name), pruned).unwrap();
        eprintln!(
            "{name}: {} -> {} bytes",
            bytes.len(),
            std::fs::metadata(dir().join(&name)).unwrap().len()
        );
    }
}
