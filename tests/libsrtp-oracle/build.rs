//! Links the system libsrtp 2 (Debian: `libsrtp2-dev`, which provides `libsrtp2.so` and
//! `/usr/include/srtp2/srtp.h`). The FFI declarations in `src/ffi.rs` are written by hand against
//! that header, so no bindgen and no C compiler run here.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-lib=srtp2");
}
