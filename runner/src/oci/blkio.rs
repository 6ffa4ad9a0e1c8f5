//! `linux.resources.blockIO` mapped onto the envelope's disk I/O throttles (`resources.io`, applied
//! as cgroup v2 `io.max` or v1 `blkio.throttle.*` and read back into the report): what Docker's
//! `--device-read-bps`/`--device-write-iops` and Kubernetes' device limits produce.
//!
//! A throttle only narrows what the container may do, so any rate is accepted, except above a
//! throttle the runtime policy sets for the same device (the policy's value is a maximum: refused
//! naming the field, never trimmed). A rate of 0 asks for no limit (runc's meaning): the runtime
//! policy's throttle for that device, if any, stays. A device must be a block device of this host
//! (`/sys/dev/block/MAJOR:MINOR`), else refused naming the entry. Weights (`weight`, `leafWeight`,
//! `weightDevice`) are proportional shares, not limits: ignored and listed.

use oci_spec::runtime::{LinuxBlockIo, LinuxThrottleDevice};

use crate::oci::OciError;
use crate::policy::IoLimit;
use crate::units::Size;

/// Which of a device's four throttles an OCI list sets.
#[derive(Clone, Copy)]
enum Kind {
    ReadBps,
    WriteBps,
    ReadIops,
    WriteIops,
}

impl Kind {
    fn get(self, l: &IoLimit) -> Option<u64> {
        match self {
            Kind::ReadBps => l.read_bps.map(|s| s.bytes()),
            Kind::WriteBps => l.write_bps.map(|s| s.bytes()),
            Kind::ReadIops => l.read_iops,
            Kind::WriteIops => l.write_iops,
        }
    }
    fn set(self, l: &mut IoLimit, v: u64) {
        match self {
            Kind::ReadBps => l.read_bps = Some(Size(v)),
            Kind::WriteBps => l.write_bps = Some(Size(v)),
            Kind::ReadIops => l.read_iops = Some(v),
            Kind::WriteIops => l.write_iops = Some(v),
        }
    }
}

/// Merges the bundle's throttles into `io` (the runtime policy's, which cap them). Each device ends
/// as one entry named `MAJOR:MINOR`; a runtime-policy entry naming the device by path is matched by
/// its numbers.
pub fn map(
    b: &LinuxBlockIo,
    io: &mut Vec<IoLimit>,
    ignored: &mut Vec<String>,
) -> Result<(), OciError> {
    if b.weight().is_some() || b.leaf_weight().is_some() || b.weight_device().is_some() {
        ignored.push(
            "linux.resources.blockIO.weight/leafWeight/weightDevice: hybox sets throttles only"
                .into(),
        );
    }
    let lists: [(&str, Kind, &Option<Vec<LinuxThrottleDevice>>); 4] = [
        (
            "throttleReadBpsDevice",
            Kind::ReadBps,
            b.throttle_read_bps_device(),
        ),
        (
            "throttleWriteBpsDevice",
            Kind::WriteBps,
            b.throttle_write_bps_device(),
        ),
        (
            "throttleReadIOPSDevice",
            Kind::ReadIops,
            b.throttle_read_iops_device(),
        ),
        (
            "throttleWriteIOPSDevice",
            Kind::WriteIops,
            b.throttle_write_iops_device(),
        ),
    ];
    for (name, kind, list) in lists {
        for (i, d) in list.iter().flatten().enumerate() {
            let field = format!("linux.resources.blockIO.{name}[{i}]");
            if d.rate() == 0 {
                continue;
            }
            let numbers = device(d, &field)?;
            let at = match io.iter().position(|l| l.resolve().ok() == Some(numbers)) {
                Some(at) => at,
                None => {
                    io.push(IoLimit {
                        device: format!("{}:{}", numbers.0, numbers.1),
                        read_bps: None,
                        write_bps: None,
                        read_iops: None,
                        write_iops: None,
                    });
                    io.len() - 1
                }
            };
            if let Some(max) = kind.get(&io[at]) {
                if d.rate() > max {
                    return Err(OciError::refused(
                        format!("{field}.rate"),
                        format!(
                            "{} per second on {}:{} is above the runtime policy's {max}",
                            d.rate(),
                            numbers.0,
                            numbers.1
                        ),
                    ));
                }
            }
            kind.set(&mut io[at], d.rate());
        }
    }
    Ok(())
}

/// The entry's device as this host's `(major, minor)` of a block device.
fn device(d: &LinuxThrottleDevice, field: &str) -> Result<(u32, u32), OciError> {
    let (Ok(major), Ok(minor)) = (u32::try_from(d.major()), u32::try_from(d.minor())) else {
        return Err(OciError::refused(
            field,
            format!(
                "expected a device's major and minor numbers, found {}:{}",
                d.major(),
                d.minor()
            ),
        ));
    };
    let probe = IoLimit {
        device: format!("{major}:{minor}"),
        read_bps: None,
        write_bps: None,
        read_iops: None,
        write_iops: None,
    };
    probe.resolve().map_err(|why| OciError::refused(field, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some_block_device() -> Option<(u32, u32)> {
        // Any block device of this host (the tests' machine has a disk; a container may not).
        let dir = std::fs::read_dir("/sys/dev/block").ok()?;
        let name = dir.flatten().next()?.file_name();
        let (a, b) = name.to_str()?.split_once(':')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    }

    fn block_io(json: serde_json::Value) -> LinuxBlockIo {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn throttles_merge_per_device_and_weights_are_listed() {
        let Some((maj, min)) = some_block_device() else {
            eprintln!("skipped: this host has no block device under /sys/dev/block");
            return;
        };
        let b = block_io(serde_json::json!({
            "weight": 100,
            "throttleReadBpsDevice": [{"major": maj, "minor": min, "rate": 1048576}],
            "throttleWriteIOPSDevice": [{"major": maj, "minor": min, "rate": 50}],
            "throttleWriteBpsDevice": [{"major": maj, "minor": min, "rate": 0}],
        }));
        let (mut io, mut ignored) = (Vec::new(), Vec::new());
        map(&b, &mut io, &mut ignored).unwrap();
        assert_eq!(io.len(), 1, "{io:?}");
        assert_eq!(io[0].device, format!("{maj}:{min}"));
        assert_eq!(io[0].read_bps, Some(Size(1048576)));
        assert_eq!(io[0].write_iops, Some(50));
        assert_eq!((io[0].write_bps, io[0].read_iops), (None, None));
        assert!(ignored[0].contains("weight"), "{ignored:?}");
    }

    #[test]
    fn above_the_runtime_policy_is_refused_naming_the_entry() {
        let Some((maj, min)) = some_block_device() else {
            eprintln!("skipped: this host has no block device under /sys/dev/block");
            return;
        };
        let mut io = vec![IoLimit {
            device: format!("{maj}:{min}"),
            read_bps: Some(Size(1000)),
            write_bps: None,
            read_iops: None,
            write_iops: None,
        }];
        let b = block_io(serde_json::json!({
            "throttleReadBpsDevice": [{"major": maj, "minor": min, "rate": 999}, {"major": maj, "minor": min, "rate": 1001}],
        }));
        let e = map(&b, &mut io, &mut Vec::new()).unwrap_err().to_string();
        assert!(
            e.contains("linux.resources.blockIO.throttleReadBpsDevice[1].rate"),
            "{e}"
        );
    }

    #[test]
    fn a_device_that_is_not_a_block_device_is_refused() {
        let b = block_io(serde_json::json!({
            "throttleWriteBpsDevice": [{"major": 4095, "minor": 1048575, "rate": 1}],
        }));
        let e = map(&b, &mut Vec::new(), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("linux.resources.blockIO.throttleWriteBpsDevice[0]"),
            "{e}"
        );
        let b = block_io(serde_json::json!({
            "throttleWriteBpsDevice": [{"major": -1, "minor": 0, "rate": 1}],
        }));
        let e = map(&b, &mut Vec::new(), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("major and minor"), "{e}");
    }
}
