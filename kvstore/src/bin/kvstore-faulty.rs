//! `kvstore-faulty`: the `kvstore` server built with the `fault-injection` feature, for the
//! chaos suite's self-tests. Faults are switched on by `KVSTORE_INJECT_FAULTS` (see
//! `kvstore::faults`); without it this behaves exactly like `kvstore`.

#[path = "../main.rs"]
mod entry;

fn main() -> std::process::ExitCode {
    entry::main()
}
