//! Reads a granted input file and writes its line count to a granted output file.
//! Usage: files INPUT OUTPUT
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (input, output) = match (args.get(1), args.get(2)) {
        (Some(i), Some(o)) => (i, o),
        _ => {
            eprintln!("usage: files INPUT OUTPUT");
            std::process::exit(2);
        }
    };
    let text = match std::fs::read_to_string(input) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("files: cannot read {input}: {e}");
            std::process::exit(3);
        }
    };
    let summary = format!("{} lines, {} bytes\n", text.lines().count(), text.len());
    if let Err(e) = std::fs::write(output, &summary) {
        eprintln!("files: cannot write {output}: {e}");
        std::process::exit(4);
    }
    print!("{summary}");
}
