//! The smallest workload: prints one line. Used for start-up cost.
fn main() {
    println!("hello from hybox");
}
