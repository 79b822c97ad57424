//! Links `berth` as a position-dependent executable.
//!
//! A PIE carries ~40k relative relocations (vtables, `&str` tables...) that the dynamic loader
//! applies at every exec, dirtying ~0.7 MiB of `.data.rel.ro` in each process. `berth` runs once
//! per container as its monitor, so those pages would be private memory paid per container, and
//! the loader's work would be paid on every CLI call and container start. Linked at a fixed
//! address, the same pages stay clean and shared between all `berth` processes. The code is still
//! compiled position-independent; shared libraries, heap, stack and mmap stay randomised.
fn main() {
    println!("cargo:rustc-link-arg-bin=berth=-no-pie");
}
