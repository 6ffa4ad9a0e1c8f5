//! A compute kernel sized by its argument: N rounds of a 64-bit mixing hash over a 64 KiB buffer.
//! Prints the digest, so both backends can be checked for the same answer.
fn main() {
    let rounds: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let mut buf: Vec<u64> = (0..8192u64).collect();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for r in 0..rounds {
        for x in buf.iter_mut() {
            h ^= *x ^ r;
            h = h.wrapping_mul(0x0100_0000_01b3).rotate_left(17);
            *x = h;
        }
    }
    println!("compute rounds={rounds} digest={h:016x}");
}
