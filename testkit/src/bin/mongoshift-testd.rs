//! `mongoshift-testd`: the testkit server as a process (built by the testkit issues).

fn main() {}
