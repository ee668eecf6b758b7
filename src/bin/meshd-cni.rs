//! The `meshd-cni` binary: the CNI plugin (src/cni), for runtimes that look it up by this name.

fn main() -> std::process::ExitCode {
    meshd::cni::main()
}
