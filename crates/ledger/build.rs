// Re-embed migrations when a file under migrations/ changes.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
