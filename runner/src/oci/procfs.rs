//! The few `/proc` facts the lifecycle needs: whether a pid is still the process it was (its
//! start time), whether it has exited (a zombie), and its descendants.

use std::collections::BTreeMap;

/// One process's `/proc/PID/stat` fields that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    /// `R`, `S`, `Z`...
    pub state: char,
    pub ppid: i32,
    /// Clock ticks after boot: with the pid, names one process for the machine's uptime.
    pub start_time: u64,
}

/// `/proc/PID/stat`, or `None` if there is no such process.
pub fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

fn parse_stat(pid: i32, text: &str) -> Option<Stat> {
    // The command name (field 2) is in parentheses and may hold spaces and ')': split after the last.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, starttime field 22.
    Some(Stat {
        pid,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        start_time: f.get(19)?.parse().ok()?,
    })
}

/// Whether `pid` is the process that had `start_time`, and has not exited.
pub fn alive(pid: i32, start_time: u64) -> bool {
    stat(pid).is_some_and(|s| s.start_time == start_time && s.state != 'Z' && s.state != 'X')
}

/// Every descendant of `pid` (children first, then theirs), from one scan of `/proc`.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if let Some(s) = stat(p) {
                children.entry(s.ppid).or_default().push(p);
            }
        }
    }
    let mut out = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            out.push(c);
            queue.push(c);
        }
    }
    out
}

/// The direct children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if stat(p).is_some_and(|s| s.ppid == pid) {
                out.push(p);
            }
        }
    }
    out
}

/// Sends `signal` to `pid`; `false` if it is gone.
pub fn signal(pid: i32, signal: i32) -> bool {
    // SAFETY: kill(2) with a positive pid touches no memory; a stale pid is excluded by the
    // caller's start-time check just before.
    unsafe { libc::kill(pid, signal) == 0 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stat_with_a_paren_in_the_name() {
        let s = super::parse_stat(
            7,
            "7 (a) b) S 1 7 7 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 1000 10",
        )
        .unwrap();
        assert_eq!((s.state, s.ppid, s.start_time), ('S', 1, 12345));
        let me = super::stat(std::process::id() as i32).unwrap();
        assert!(super::alive(me.pid, me.start_time));
        assert!(!super::alive(me.pid, me.start_time + 1));
    }
}
