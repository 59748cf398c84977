#!/usr/bin/env bash
# Installs everything lb needs to build and test on a fresh Debian machine;
# `setup.sh bench` also installs the benchmark's peers and plotting.
# Idempotent: each step checks first and does nothing when already satisfied.
#   - Debian packages used by the lab, the tests and the benchmarks
#   - rust-src for the nightly toolchain (the eBPF crate is built with -Z build-std)
#   - bpf-linker, linked against the nightly toolchain's own shared LLVM 22
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

APT_PACKAGES=(iproute2 ethtool iputils-ping curl bpftool util-linux procps php-cli redis-server openssl bird2)
if [[ "${1:-}" == "bench" ]]; then
    APT_PACKAGES+=(nftables haproxy nginx wrk python3 python3-matplotlib)
fi

need_apt=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$p")
done
if ((${#need_apt[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        log "missing Debian packages (${need_apt[*]}); run this script as root"; exit 1
    fi
    log "installing Debian packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    log "a nightly Rust toolchain is required to build the eBPF program; installing it"
    rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
    log "adding rust-src to the nightly toolchain"
    rustup component add rust-src --toolchain nightly
fi

BPF_LINKER_VERSION=0.13
if ! command -v bpf-linker >/dev/null 2>&1 && [[ ! -x "$HOME/.cargo/bin/bpf-linker" ]]; then
    sysroot=$(rustup run nightly rustc --print sysroot)
    llvm_so=$(ls "$sysroot"/lib/libLLVM.so.22* 2>/dev/null | head -n1 || true)
    if [[ -z "$llvm_so" ]]; then
        log "the nightly toolchain at $sysroot ships no libLLVM.so.22*; bpf-linker needs LLVM 22"; exit 1
    fi
    prefix=$(mktemp -d)
    trap 'rm -rf "$prefix"' EXIT
    mkdir -p "$prefix/lib"
    ln -s "$llvm_so" "$prefix/lib/libLLVM.so"
    log "building bpf-linker $BPF_LINKER_VERSION against $llvm_so (takes a few minutes)"
    LLVM_PREFIX="$prefix" LD_LIBRARY_PATH="$sysroot/lib" \
        cargo install bpf-linker --version "~$BPF_LINKER_VERSION" --locked \
        --no-default-features --features llvm-22
fi
log "ready"
