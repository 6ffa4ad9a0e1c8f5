//! Touches N MiB of memory (argument, default 16), one write per page, then reports.
fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(16);
    let blocks = hybox_examples::touch_mib(mib);
    let total: usize = blocks.iter().map(|b| b.iter().step_by(4096).map(|&x| x as usize).sum::<usize>()).sum();
    println!("alloc touched {mib} MiB ({total} pages)");
}
