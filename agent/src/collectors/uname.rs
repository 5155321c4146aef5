//! `node_uname_info`, from the uname(2) system call as node_exporter does. In a pod this is
//! the host's kernel; `nodename` is the host's name when the pod uses the host's UTS
//! namespace (hostNetwork), and the pod's name otherwise.
use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};

use super::{CollectError, Collector};
use crate::metrics::family;

#[derive(Debug)]
pub struct UnameCollector;

#[derive(Debug, Clone, Default)]
pub struct Uname {
    pub sysname: String,
    pub nodename: String,
    pub release: String,
    pub version: String,
    pub machine: String,
    pub domainname: String,
}

pub fn uname() -> Result<Uname, std::io::Error> {
    // SAFETY: utsname is plain old data, and uname fills it in or fails.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Ok(Uname {
        sysname: field(&u.sysname),
        nodename: field(&u.nodename),
        release: field(&u.release),
        version: field(&u.version),
        machine: field(&u.machine),
        domainname: field(&u.domainname),
    })
}

impl Collector for UnameCollector {
    fn name(&self) -> &'static str {
        "uname"
    }

    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        let u = uname().map_err(|source| CollectError::Read {
            path: "uname(2)".into(),
            source,
        })?;
        family(
            out,
            "node_uname_info",
            "Labeled system information as provided by the uname system call.",
            MetricType::Gauge,
            [(
                [
                    ("domainname", u.domainname.as_str()),
                    ("machine", u.machine.as_str()),
                    ("nodename", u.nodename.as_str()),
                    ("release", u.release.as_str()),
                    ("sysname", u.sysname.as_str()),
                    ("version", u.version.as_str()),
                ],
                1.0,
            )],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_matches_proc() {
        let u = uname().unwrap();
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(u.release, release.trim());
        assert_eq!(u.sysname, "Linux");
    }
}
