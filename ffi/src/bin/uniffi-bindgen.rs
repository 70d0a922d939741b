//! UniFFI's binding generator, built against exactly the UniFFI version of this crate (a
//! generator of another version would not match the library's metadata). `scripts/bindings` runs
//! it in library mode on the built `libhattama_ffi.so`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
