//! Touches N MiB of memory (argument, default 16), one write per page, then reports.
fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(16);
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    for _ in 0..mib {
        let mut b = vec![0u8; 1 << 20];
        for i in (0..b.len()).step_by(4096) {
            b[i] = 1;
        }
        blocks.push(b);
    }
    let total: usize = blocks.iter().map(|b| b.iter().step_by(4096).map(|&x| x as usize).sum::<usize>()).sum();
    println!("alloc touched {mib} MiB ({total} pages)");
}
