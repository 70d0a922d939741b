# Shared set-up of the scripts: install what is missing, nothing else. Sourced, not run.

# ensure_apt_packages PATH:PACKAGE ... installs each PACKAGE whose PATH does not exist.
ensure_apt_packages() {
  local missing=() pair
  for pair in "$@"; do
    [ -e "${pair%%:*}" ] || missing+=("${pair#*:}")
  done
  ((${#missing[@]})) || return 0
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# ensure_rust_tools installs rustfmt, clippy and cargo-nextest when missing.
ensure_rust_tools() {
  if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
  fi
  if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
  fi
}

# ensure_npm_packages DIR runs `npm ci` in DIR when its node_modules is missing or older than
# its package-lock.json (the lock file is committed; node_modules never is).
ensure_npm_packages() {
  local dir=$1
  if [ -e "$dir/node_modules/.package-lock.json" ] \
    && ! [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    return 0
  fi
  command -v npm >/dev/null || { echo "npm is missing: install Node.js (>= 18) and npm" >&2; return 1; }
  echo "installing npm packages of $dir"
  (cd "$dir" && npm ci --no-audit --no-fund)
}

# ensure_pip_packages REQUIREMENTS VENV installs the pinned REQUIREMENTS into the virtual
# environment VENV (under the gitignored build/) unless it already holds exactly those.
ensure_pip_packages() {
  local requirements=$1 venv=$2
  cmp -s "$requirements" "$venv/requirements.txt" && return 0
  echo "installing Python packages of $requirements into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$venv/requirements.txt"
}

# ensure_cargo_fuzz installs cargo-fuzz (the libFuzzer driver of fuzz/) when missing.
ensure_cargo_fuzz() {
  if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
  fi
}

# use_fuzz_toolchain sets FUZZ_TOOLCHAIN to the toolchain that builds the fuzz targets: nightly
# when it is installed, else stable with RUSTC_BOOTSTRAP=1, which lets stable rustc and cargo
# accept the unstable options cargo fuzz may pass (checked: `cargo +stable fuzz build --release
# --debug-assertions --sanitizer none` of a libfuzzer-sys 0.4.13 target builds and runs with
# stable 1.95 and RUSTC_BOOTSTRAP=1; scripts/fuzz always builds with --sanitizer none).
use_fuzz_toolchain() {
  if rustup run nightly rustc --version >/dev/null 2>&1; then
    FUZZ_TOOLCHAIN=nightly
  else
    export RUSTC_BOOTSTRAP=1
    FUZZ_TOOLCHAIN=stable
  fi
}

# HATTAMA_TOOLS is where tools built from source live: outside the repository, kept between runs.
HATTAMA_TOOLS=${HATTAMA_TOOLS:-$HOME/.cache/hattama-tools}

# ensure_garage installs Garage (the S3-compatible object store the tests run against) into
# $HATTAMA_TOOLS when it is missing. It builds from source with cargo: 10 minutes or more.
ensure_garage() {
  [ -x "$HATTAMA_TOOLS/bin/garage" ] && return 0
  echo "installing garage 2.5.0 into $HATTAMA_TOOLS (builds from source, 10+ minutes)"
  cargo install garage --version 2.5.0 --locked --root "$HATTAMA_TOOLS"
}
