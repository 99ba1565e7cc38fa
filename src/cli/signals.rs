//! Interrupts: the first SIGINT/SIGTERM asks the running command to stop cleanly (it saves its
//! state and exits 130); the second exits at once.

use mongoshift::exit;
use tokio_util::sync::CancellationToken;

use super::output::Output;

/// First SIGINT/SIGTERM: stop after the current batches, save, exit 130. Second: exit at once
/// (the lockfile is consistent at every moment, so this loses seconds of work, never data).
pub async fn handle(cancel: CancellationToken, out: Output) {
    let mut signals = 0;
    loop {
        let received = wait_for_signal().await;
        if !received {
            return;
        }
        signals += 1;
        if signals == 1 {
            out.err(
                "\nstopping: saving the migration state (press Ctrl-C again to stop at once)\n",
            );
            cancel.cancel();
        } else {
            out.err("\nstopped at once; `mongoshift apply` resumes from the last checkpoint\n");
            std::process::exit(i32::from(exit::INTERRUPTED));
        }
    }
}

#[cfg(unix)]
async fn wait_for_signal() -> bool {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return false;
    };
    tokio::select! {
        _ = int.recv() => true,
        _ = term.recv() => true,
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> bool {
    tokio::signal::ctrl_c().await.is_ok()
}
