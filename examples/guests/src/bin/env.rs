//! Prints its arguments and environment, sorted, one per line.
fn main() {
    for (i, a) in std::env::args().enumerate().skip(1) {
        println!("arg[{i}]={a}");
    }
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.sort();
    for (k, v) in vars {
        println!("env {k}={v}");
    }
}
