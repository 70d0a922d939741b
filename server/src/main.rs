//! `hattama-server`: placeholder until the [Sync] issue adds `serve`.

fn main() {
    println!("hattama-server {}: serving arrives with the [Sync] issue", env!("CARGO_PKG_VERSION"));
}
