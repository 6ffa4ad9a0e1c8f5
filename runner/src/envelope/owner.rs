//! The owner record of an envelope, kept in the cgroup directory's *name*:
//! `<run_id>.owner-<pid>-<starttime>`.
//!
//! Why the name and not a file or a state directory: cgroupfs does not allow creating files, and a
//! separate state directory (`/run/hybox/...`) would be a second thing to create, to clean up and to
//! keep consistent with the cgroup; with the name, the record exists exactly as long as the cgroup
//! (one `mkdir` creates both, one `rmdir` removes both), and a crash can never leave one without the
//! other. The start time (field 22 of `/proc/PID/stat`, clock ticks since boot) guards against pid
//! reuse: an owner is alive only if its pid exists *and* started at the recorded time. `gc` assumes it
//! runs in the same pid namespace as the hybox that created the envelope.

use std::path::Path;

/// Who created an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub pid: i32,
    pub start_time: u64,
}

const MARK: &str = ".owner-";

impl Owner {
    /// The current process.
    pub fn current() -> std::io::Result<Owner> {
        // Read once per process (a forked child has another pid, hence the key): every envelope
        // records it, and it cannot change.
        static CURRENT: std::sync::Mutex<Option<Owner>> = std::sync::Mutex::new(None);
        let pid = std::process::id() as i32;
        let mut cached = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = cached.filter(|o| o.pid == pid) {
            return Ok(o);
        }
        let start_time = start_time_of(Path::new("/proc/self/stat"))?;
        let o = Owner { pid, start_time };
        *cached = Some(o);
        Ok(o)
    }

    /// Whether this owner is still running: its pid exists and started at the recorded time.
    pub fn is_alive(&self) -> bool {
        match start_time_of(&Path::new("/proc").join(self.pid.to_string()).join("stat")) {
            Ok(t) => t == self.start_time,
            Err(_) => false,
        }
    }

    /// The cgroup directory name for `run_id` owned by `self`.
    pub fn leaf_name(&self, run_id: &str) -> String {
        format!("{run_id}{MARK}{}-{}", self.pid, self.start_time)
    }
}

/// Parses a leaf name made by [`Owner::leaf_name`]: `(run_id, owner)`. `None` for any other name, which
/// gc then leaves alone (it is not ours).
pub fn parse_leaf_name(name: &str) -> Option<(&str, Owner)> {
    let at = name.rfind(MARK)?;
    let (run_id, rest) = (&name[..at], &name[at + MARK.len()..]);
    let (pid, start) = rest.split_once('-')?;
    if run_id.is_empty() || pid.is_empty() || start.is_empty() {
        return None;
    }
    if !pid.bytes().all(|b| b.is_ascii_digit()) || !start.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((
        run_id,
        Owner {
            pid: pid.parse().ok()?,
            start_time: start.parse().ok()?,
        },
    ))
}

/// Field 22 (`starttime`) of a `/proc/PID/stat` file. The command name (field 2) may contain spaces
/// and parentheses, so fields are counted after the *last* `)` (proc(5)).
fn start_time_of(stat: &Path) -> std::io::Result<u64> {
    let text = std::fs::read_to_string(stat)?;
    parse_start_time(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: no starttime field", stat.display()),
        )
    })
}

pub(crate) fn parse_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // `after` starts at field 3 (state); field 22 is the 20th from there.
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_name_round_trips() {
        let o = Owner {
            pid: 4242,
            start_time: 987654,
        };
        let name = o.leaf_name("19c1-2a-0");
        assert_eq!(name, "19c1-2a-0.owner-4242-987654");
        assert_eq!(parse_leaf_name(&name), Some(("19c1-2a-0", o)));
    }

    #[test]
    fn foreign_names_are_not_parsed() {
        for n in [
            "hybox",
            "run.owner-",
            "run.owner-12",
            "run.owner-x-1",
            ".owner-1-2",
            "run.owner-1-2z",
        ] {
            assert_eq!(parse_leaf_name(n), None, "{n}");
        }
    }

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat = "77 (a) b (c) S 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10";
        assert_eq!(parse_start_time(stat), Some(123456));
    }

    #[test]
    fn current_owner_is_alive_and_a_different_start_time_is_not() {
        let me = Owner::current().unwrap();
        assert!(me.is_alive());
        assert!(!Owner {
            start_time: me.start_time + 1,
            ..me
        }
        .is_alive());
    }
}
