#!/usr/bin/env bash
# Installs what this project needs on Debian 12, skipping what is present.
# Runs apt-get (as root, or through sudo when available).
set -euo pipefail

PKGS=(
  build-essential pkg-config
  libopenblas-openmp-dev            # OpenBLAS built on OpenMP: one thread pool with our kernels
  libhdf5-dev hdf5-tools            # checkpoints and tokenizers
  libjpeg62-turbo-dev libpng-dev    # image decode
  libyaml-dev                       # configs
  libopenmpi-dev openmpi-bin        # multi-machine runs
  python3-torch python3-torchvision python3-numpy python3-h5py python3-pytest
  python3-sklearn python3-faiss python3-matplotlib python3-pil python3-yaml
  dataset-fashion-mnist             # the embedded default data
  clang-14 libclang-rt-14-dev       # libFuzzer and the sanitizer runtimes (make fuzz, make test)
  cppcheck clang-tidy-14            # the static analysers (make analyse)
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "install_deps: installing ${missing[*]}"
  # env, not export: sudo resets the environment; the lock timeout waits out unattended-upgrades at boot
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install_deps: all ${#PKGS[@]} packages present"
fi

# Several OpenBLAS builds may be installed; point the linker at the OpenMP one.
for alt in libopenblas.so.0-x86_64-linux-gnu libblas.so.3-x86_64-linux-gnu; do
  target=$(update-alternatives --list "$alt" 2>/dev/null | grep openblas-openmp | head -1 || true)
  if [ -n "$target" ]; then $SUDO update-alternatives --set "$alt" "$target" >/dev/null; fi
done
echo "install_deps: OpenBLAS -> $(readlink -f /usr/lib/x86_64-linux-gnu/libopenblas.so.0)"
