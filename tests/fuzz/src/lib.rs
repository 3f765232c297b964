//! What the fuzz targets check beyond "no panic, no hang, no runaway memory".

use k2_core::MarketEvent;
use k2_core::codec::{SchemaIds, WireCodec};

/// The schema ids the targets frame events with.
pub const IDS: SchemaIds = SchemaIds { trade: 1, quote: 2 };

/// An event a parser accepted must come back from the wire unchanged: a
/// parser and the codec that disagree about what an event may hold would
/// lose or alter data without any error. An event whose values do not fit
/// the schema (a timestamp beyond year 9999) may be refused by the encoder;
/// that refusal is a dead letter, not a bug.
pub fn survives_the_wire(event: &MarketEvent) {
    let codec = WireCodec::new(IDS);
    let Ok(frame) = codec.encode(event) else {
        return;
    };
    match codec.decode(&frame) {
        Ok(back) => assert_eq!(&back, event, "an event changed on its way through the wire"),
        Err(e) => panic!("a frame K2 wrote does not decode: {e}; event {event:?}"),
    }
}

/// The stack an actix-web worker thread has (Rust's default for spawned
/// threads): request bodies are handled there, not on a main thread's 8 MiB.
pub const WORKER_STACK: usize = 2 << 20;

/// Runs `f` on a thread with a worker's stack, so input that recurses too
/// deep for the server overflows here too.
pub fn on_worker_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let worker = std::thread::Builder::new().stack_size(WORKER_STACK).spawn_scoped(s, f);
        // libfuzzer-sys's panic hook aborts the process before a panic on
        // the worker unwinds, so join only fails if spawning did.
        worker.expect("spawn a fuzz worker thread").join().expect("fuzz worker finished")
    })
}
