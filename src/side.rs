//! The side channels' clients (the control socket, the metrics listener): each accepted client
//! is served on a thread of its own, at most a fixed number at once, until the channel stops.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Serves each client `incoming` yields with `serve`, on a thread named `name`, at most `max`
/// at once (the others are given to `busy`, on this thread, and dropped); returns once `stop` is
/// set (checked at each accept: the stopper wakes the accept with a connection of its own).
pub(crate) fn serve_clients<S: Send + 'static>(
    incoming: impl Iterator<Item = std::io::Result<S>>,
    stop: &AtomicBool,
    max: usize,
    name: &str,
    busy: impl Fn(S),
    serve: impl Fn(S) + Clone + Send + 'static,
) {
    let clients = Arc::new(AtomicUsize::new(0));
    for stream in incoming {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = stream else { continue };
        if clients.fetch_add(1, Ordering::AcqRel) >= max {
            clients.fetch_sub(1, Ordering::AcqRel);
            busy(stream);
            continue;
        }
        let (serve, count) = (serve.clone(), Arc::clone(&clients));
        let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
            serve(stream);
            count.fetch_sub(1, Ordering::AcqRel);
        });
        if spawned.is_err() {
            clients.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
