//! Just enough of a BTF reader to find struct member offsets in a kernel's BTF. aya parses
//! BTF too, but keeps member lookup private, and Rust eBPF has no CO-RE relocations: user
//! space resolves offsets and passes them as globals.
//!
//! The reader borrows the bytes (the same bytes aya is given, so the file is read once) and
//! keeps only the offset of each type record, 4 bytes per type, decoding on demand.
//!
//! Format: <https://docs.kernel.org/bpf/btf.html>.

const BTF_MAGIC: u16 = 0xeb9f;

// Kinds, from include/uapi/linux/btf.h.
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Members `find` may visit for one lookup; a real `task_struct` search visits a few hundred.
const FIND_BUDGET: u32 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("BTF has no struct {0}")]
    NoStruct(String),
    #[error("BTF struct {strukt} has none of the fields {fields:?}")]
    NoField { strukt: String, fields: Vec<String> },
    #[error("struct {0} is not in the family's KernelReads (a build bug: declare it)")]
    Undeclared(String),
}

#[derive(Debug, Clone, Copy)]
struct Type {
    name_off: u32,
    kind: u32,
    vlen: u32,
    kind_flag: bool,
    size_or_type: u32,
    /// Offset of the kind-specific data that follows the common header.
    extra: usize,
}

/// An index over a BTF blob: where each type record starts, and the string section.
pub struct Btf<'a> {
    data: &'a [u8],
    /// Offset of each type's record in `data`; index = type id - 1 (id 0 is void).
    types: Vec<u32>,
    strings: (usize, usize),
}

/// Where a member lives: byte offset from the start of the struct, and byte size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub name_index: usize,
    /// Byte offset (of the byte holding its first bit, for a bitfield).
    pub offset: u32,
    pub size: u32,
    /// Offset in bits: `offset * 8` for a whole member, more for a bitfield's.
    pub bit_offset: u32,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(BtfError::Malformed("truncated"))
}

fn type_at(data: &[u8], at: usize) -> Result<(Type, usize), BtfError> {
    let name_off = u32_at(data, at)?;
    let info = u32_at(data, at + 4)?;
    let size_or_type = u32_at(data, at + 8)?;
    let kind = (info >> 24) & 0x1f;
    let vlen = info & 0xffff;
    let extra = at + 12;
    let extra_len = match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
        KIND_ARRAY => 12,
        KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen as usize,
        KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen as usize,
        0..=19 => 0,
        _ => return Err(BtfError::Malformed("unknown type kind")),
    };
    let t = Type {
        name_off,
        kind,
        vlen,
        kind_flag: info >> 31 == 1,
        size_or_type,
        extra,
    };
    Ok((t, extra + extra_len))
}

impl<'a> Btf<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Self, BtfError> {
        let magic = data
            .get(0..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or(BtfError::Malformed("no header"))?;
        if magic != BTF_MAGIC {
            // Big-endian BTF would need byte swapping; nodelens only builds bpfel programs.
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_start = hdr_len + type_off;
        let types_end = types_start + type_len;
        let strings = (hdr_len + str_off, hdr_len + str_off + str_len);
        if types_end > data.len() || strings.1 > data.len() {
            return Err(BtfError::Malformed("sections past end of data"));
        }
        let mut types = Vec::with_capacity(type_len / 32);
        let mut at = types_start;
        while at < types_end {
            let (_, next) = type_at(data, at)?;
            types.push(u32::try_from(at).map_err(|_| BtfError::Malformed("too large"))?);
            at = next;
        }
        Ok(Self {
            data,
            types,
            strings,
        })
    }

    /// The type with this id; `None` for void and ids past the table.
    fn get(&self, id: u32) -> Option<Type> {
        let at = *self.types.get((id as usize).checked_sub(1)?)?;
        type_at(self.data, at as usize).ok().map(|(t, _)| t)
    }

    /// Every type with its id.
    fn all(&self) -> impl Iterator<Item = (u32, Type)> + '_ {
        (1..=self.types.len() as u32).filter_map(|id| Some((id, self.get(id)?)))
    }

    /// The string at `off`. Kernel names are at most KSYM_NAME_LEN (512) bytes, so the scan
    /// for the NUL stops there: an unterminated string section would otherwise make every
    /// lookup linear in its size. A name that is too long or not UTF-8 reads as `"?"`,
    /// which matches nothing and is not anonymous (`""`).
    fn name(&self, off: u32) -> &str {
        const KSYM_NAME_LEN: usize = 512;
        let start = self.strings.0 + off as usize;
        let Some(rest) = self.data.get(start..self.strings.1) else {
            return "";
        };
        let rest = &rest[..rest.len().min(KSYM_NAME_LEN)];
        match rest.iter().position(|&b| b == 0) {
            Some(end) => std::str::from_utf8(&rest[..end]).unwrap_or("?"),
            None => "?",
        }
    }

    /// Size in bytes of a type, following typedefs, qualifiers and array elements. Bounded
    /// steps and checked arithmetic: the BTF may be hostile (a typedef or array that refers
    /// to itself, a size that overflows).
    fn size_of(&self, mut id: u32) -> Option<u32> {
        let mut elements: u32 = 1;
        for _ in 0..32 {
            let t = self.get(id)?;
            match t.kind {
                KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 => {
                    return t.size_or_type.checked_mul(elements);
                }
                KIND_PTR => return 8u32.checked_mul(elements),
                KIND_ARRAY => {
                    id = u32_at(self.data, t.extra).ok()?;
                    elements = elements.checked_mul(u32_at(self.data, t.extra + 8).ok()?)?;
                }
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type;
                }
                _ => return None,
            }
        }
        None
    }

    /// Finds the first of `candidates` (older names last) among `strukt`'s members, looking
    /// into anonymous structs and unions too.
    pub fn member(&self, strukt: &str, candidates: &[&str]) -> Result<Member, BtfError> {
        let (id, _) = self
            .all()
            .find(|(_, t)| t.kind == KIND_STRUCT && self.name(t.name_off) == strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        for (index, field) in candidates.iter().enumerate() {
            let mut budget = FIND_BUDGET;
            if let Some((bits, size)) = self.find(id, field, 0, 0, &mut budget) {
                return Ok(Member {
                    name_index: index,
                    offset: bits / 8,
                    size,
                    bit_offset: bits,
                });
            }
        }
        Err(BtfError::NoField {
            strukt: strukt.to_owned(),
            fields: candidates.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// Depth-first search through anonymous members: (offset in bits, size in bytes). `budget` bounds the members visited in
    /// all: hostile BTF could nest 65,535-member anonymous unions eight deep.
    fn find(
        &self,
        id: u32,
        field: &str,
        base_bits: u32,
        depth: u32,
        budget: &mut u32,
    ) -> Option<(u32, u32)> {
        let t = self.get(id)?;
        if depth > 8 || !(t.kind == KIND_STRUCT || t.kind == KIND_UNION) {
            return None;
        }
        for i in 0..t.vlen as usize {
            *budget = budget.checked_sub(1)?;
            let at = t.extra + i * 12;
            let name_off = u32_at(self.data, at).ok()?;
            let member_type = u32_at(self.data, at + 4).ok()?;
            let raw = u32_at(self.data, at + 8).ok()?;
            // With kind_flag the low 24 bits are the bit offset and the top 8 a bitfield size.
            let bits = base_bits.checked_add(if t.kind_flag { raw & 0xff_ffff } else { raw })?;
            let name = self.name(name_off);
            if name == field {
                return Some((bits, self.size_of(member_type)?));
            }
            if name.is_empty()
                && let Some(found) =
                    self.find(self.resolve(member_type), field, bits, depth + 1, budget)
            {
                return Some(found);
            }
        }
        None
    }

    /// Whether `strukt` has a member named `field` (anywhere, anonymous members included).
    pub fn has_member(&self, strukt: &str, field: &str) -> bool {
        self.member(strukt, &[field]).is_ok()
    }

    /// The argument types of a BTF tracepoint, from its `btf_trace_<event>` typedef
    /// (`void (*)(void *, <args>...)`), without the leading context pointer. Pointers to
    /// structs read `struct NAME *`; other types read as their (typedef-resolved) name.
    pub fn tracepoint_args(&self, event: &str) -> Option<Vec<String>> {
        let want = format!("btf_trace_{event}");
        let (_, typedef) = self
            .all()
            .find(|(_, t)| t.kind == KIND_TYPEDEF && self.name(t.name_off) == want)?;
        let ptr = self.get(typedef.size_or_type)?;
        let proto = self.get(ptr.size_or_type)?;
        if ptr.kind != KIND_PTR || proto.kind != KIND_FUNC_PROTO {
            return None;
        }
        // Tracepoints have at most a dozen arguments; a hostile count stops here.
        if proto.vlen > 16 {
            return None;
        }
        let mut args = Vec::new();
        for i in 1..proto.vlen as usize {
            let ty = u32_at(self.data, proto.extra + i * 8 + 4).ok()?;
            args.push(self.describe(ty));
        }
        Some(args)
    }

    fn describe(&self, id: u32) -> String {
        let Some(t) = self.get(self.resolve(id)) else {
            return String::new();
        };
        match t.kind {
            KIND_PTR => {
                let target = self.resolve(t.size_or_type);
                match self.get(target) {
                    Some(s) if s.kind == KIND_STRUCT => {
                        format!("struct {} *", self.name(s.name_off))
                    }
                    _ => "ptr".into(),
                }
            }
            _ => self.name(t.name_off).to_owned(),
        }
    }

    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.get(id) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.size_or_type
                }
                _ => return id,
            }
        }
        id
    }
}

#[cfg(test)]
pub mod fixtures;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_task_struct_fields_in_every_fixture_kernel() {
        let all = fixtures::all();
        assert!(all.len() >= 4, "fixtures for the host and 5.10, 6.1, 6.12");
        for (release, bytes) in all {
            let btf = Btf::parse(&bytes).unwrap();
            let pid = btf.member("task_struct", &["pid"]).unwrap();
            assert_eq!(pid.size, 4, "{release}");
            let state = btf.member("task_struct", &["__state", "state"]).unwrap();
            assert!(state.size == 4 || state.size == 8, "{release}");
            assert!(
                pid.offset > state.offset,
                "{release}: pid comes after the state"
            );
            assert!(matches!(
                btf.member("task_struct", &["no_such_field"]),
                Err(BtfError::NoField { .. })
            ));
            assert!(matches!(
                btf.member("no_such_struct", &["x"]),
                Err(BtfError::NoStruct(_))
            ));
        }
    }

    #[test]
    fn finds_fields_inside_anonymous_members() {
        // 6.x kernels keep task_struct.rcu in an anonymous union.
        let btf_bytes = fixtures::load("6.12.118+deb13-cloud-amd64");
        let btf = Btf::parse(&btf_bytes).unwrap();
        assert!(btf.member("task_struct", &["rcu"]).is_ok());
    }

    #[test]
    fn reads_tracepoint_signatures() {
        for (release, bytes) in fixtures::all() {
            let btf = Btf::parse(&bytes).unwrap();
            let issue = btf.tracepoint_args("block_rq_issue").unwrap();
            assert!(
                issue.contains(&"struct request *".to_owned()),
                "{release}: {issue:?}"
            );
            let switch = btf.tracepoint_args("sched_switch").unwrap();
            assert_eq!(
                switch.get(1).map(String::as_str),
                Some("struct task_struct *"),
                "{release}: {switch:?}"
            );
            assert!(btf.tracepoint_args("no_such_event").is_none());
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Btf::parse(&[]).is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0, 0, 0, 0, 255, 255, 0, 0]).is_err());
        let mut junk = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        junk.extend_from_slice(&[0, 0, 0, 0, 16, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0]);
        junk.extend_from_slice(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(Btf::parse(&junk).is_err());
    }
}
