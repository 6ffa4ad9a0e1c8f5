#!/usr/bin/env bash
# Builds every example guest for x86_64 Linux, wasm32-wasip1 and wasm32-wasip2 (components) into
# examples/out/{native,wasm,component}/ and lays out the function
# bundles in examples/out/bundles/. Idempotent; safe to run concurrently (cargo locks its target dir).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/out"
for t in wasm32-wasip1 wasm32-wasip2; do
  rustup target list --installed 2>/dev/null | grep -qx $t || rustup target add $t >&2
done
cd "$here/guests"
# The guests are their own workspace with their own target dir, wherever CARGO_TARGET_DIR points.
export CARGO_TARGET_DIR="$here/guests/target"
# Native guests are static (crt-static): they run in any rootfs, with no loader to mount.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release --target x86_64-unknown-linux-gnu
cargo build --quiet --release --target wasm32-wasip1
# The same guests as WASI preview 2 components (wasi:cli/command), for the component path.
cargo build --quiet --release --target wasm32-wasip2
mkdir -p "$out/native" "$out/wasm" "$out/component"
bins=$(ls src/bin | sed "s/\.rs$//")
for b in $bins; do
  if [ -f "target/x86_64-unknown-linux-gnu/release/$b" ]; then
    install -m 0755 "target/x86_64-unknown-linux-gnu/release/$b" "$out/native/$b.tmp" && mv "$out/native/$b.tmp" "$out/native/$b"
  fi
  if [ -f "target/wasm32-wasip1/release/$b.wasm" ]; then
    install -m 0644 "target/wasm32-wasip1/release/$b.wasm" "$out/wasm/$b.wasm.tmp" && mv "$out/wasm/$b.wasm.tmp" "$out/wasm/$b.wasm"
  fi
  if [ -f "target/wasm32-wasip2/release/$b.wasm" ]; then
    install -m 0644 "target/wasm32-wasip2/release/$b.wasm" "$out/component/$b.wasm.tmp" && mv "$out/component/$b.wasm.tmp" "$out/component/$b.wasm"
  fi
done
echo "examples built into $out" >&2
# Function bundles: each examples/<name>/bundle.json names <name> and <name>.wasm beside it.
for b in $bins; do
  if [ -f "$here/$b/bundle.json" ]; then
    cp "$out/native/$b" "$here/$b/$b.tmp" && mv "$here/$b/$b.tmp" "$here/$b/$b"
    cp "$out/wasm/$b.wasm" "$here/$b/$b.wasm.tmp" && mv "$here/$b/$b.wasm.tmp" "$here/$b/$b.wasm"
  fi
done
# HTTP functions (the wasi:http/proxy world): their own workspace, components only.
cd "$here/http-guests"
CARGO_TARGET_DIR="$here/http-guests/target" cargo build --quiet --release --target wasm32-wasip2
mkdir -p "$out/http"
for b in $(ls src/bin | sed "s/\.rs$//"); do
  install -m 0644 "target/wasm32-wasip2/release/$b.wasm" "$out/http/$b.wasm.tmp" && mv "$out/http/$b.wasm.tmp" "$out/http/$b.wasm"
done
echo "HTTP function guests built into $out/http" >&2
