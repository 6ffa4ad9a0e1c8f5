//! Writes a line as time passes, for checking that output is streamed (a pod's log file gets each
//! line when it is written, not at exit): `ticker [NAME] [INTERVAL_MS] [COUNT]` prints
//! `NAME started` on stderr, then `NAME tick N` on stdout every INTERVAL_MS (default 200) ms,
//! COUNT times (default 0: for ever), flushing each line.
use std::io::Write;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map(String::as_str).unwrap_or("ticker");
    let interval: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(200);
    let count: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(0);
    eprintln!("{name} started");
    let mut out = std::io::stdout().lock();
    let mut n = 1u64;
    while count == 0 || n <= count {
        writeln!(out, "{name} tick {n}").expect("write stdout");
        out.flush().expect("flush stdout");
        std::thread::sleep(std::time::Duration::from_millis(interval));
        n += 1;
    }
}
