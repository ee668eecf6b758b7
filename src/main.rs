//! The `meshd` binary: everything lives in the library; this only hands over to the CLI, or to the
//! CNI plugin when started under the name `meshd-cni` (a link to this binary).

fn main() -> std::process::ExitCode {
    if meshd::cni::invoked_as_plugin() {
        return meshd::cni::main();
    }
    meshd::cli::main()
}
