//! `node_uname_info`, from the uname(2) system call as node_exporter does. In a pod this is
//! the host's kernel; `nodename` is the host's name when the pod uses the host's UTS
//! namespace (hostNetwork), and the pod's name otherwise.
use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};

use crate::metrics::{CollectError, Collector, family};

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

pub fn uname() -> Uname {
    let u = rustix::system::uname();
    let text = |c: &std::ffi::CStr| c.to_string_lossy().into_owned();
    Uname {
        sysname: text(u.sysname()),
        nodename: text(u.nodename()),
        release: text(u.release()),
        version: text(u.version()),
        machine: text(u.machine()),
        domainname: text(u.domainname()),
    }
}

impl Collector for UnameCollector {
    fn name(&self) -> &'static str {
        "uname"
    }

    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        let u = uname();
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
        let u = uname();
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(u.release, release.trim());
        assert_eq!(u.sysname, "Linux");
    }
}
