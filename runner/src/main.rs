fn main() {
    // Placeholder dispatch until the CLI lands (the lead replaces this): the wasm backend's worker.
    if std::env::args().nth(1).as_deref() == Some("__wasm-worker") {
        std::process::exit(hybox::backend::wasm::worker_main());
    }
}
