//! sip-controller binary. It refuses to start until the B2BUA and the NG server are built, so
//! that nobody mistakes it for a working signalling controller.

use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--version" || a == "-V") {
        println!("sip-controller {}", sip_controller::VERSION);
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "sip-controller {}: the SIP B2BUA and the NG server are not in this build yet; \
         nothing to run (see docs/ARCHITECTURE.md)",
        sip_controller::VERSION
    );
    ExitCode::from(2)
}
