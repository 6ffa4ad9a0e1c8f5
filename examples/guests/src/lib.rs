//! What more than one example guest does.

/// Allocates `mib` MiB in 1 MiB blocks and writes one byte per 4 KiB page, so every page is really
/// charged (to the wasm memory limit, or to the cgroup).
pub fn touch_mib(mib: usize) -> Vec<Vec<u8>> {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    for _ in 0..mib {
        let mut b = vec![0u8; 1 << 20];
        for i in (0..b.len()).step_by(4096) {
            b[i] = 1;
        }
        blocks.push(b);
    }
    blocks
}
