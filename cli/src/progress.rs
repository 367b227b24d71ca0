//! A progress line on stderr for long work (reading, compiling, judging a
//! replay, the matrix), drawn only when stderr is a terminal, not with
//! `-q`, and only once the work has lasted a second: short runs and logs
//! stay clean. One thread redraws the line from shared counters, so the
//! work itself only bumps an atomic.
//!
//! `SLUICE_PROGRESS=always` draws it whatever stderr is (for tests and
//! for people who want it in a log), `never` turns it off.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

struct State {
    /// What is being done, and of how many things (0: unknown).
    stage: Mutex<(String, u64)>,
    done: AtomicU64,
    drawn: AtomicBool,
    started: Instant,
    /// `SLUICE_PROGRESS=always`: each stage is drawn as it begins, too.
    forced: bool,
}

static STATE: OnceLock<State> = OnceLock::new();

/// How long work runs before the line appears, and how often it is redrawn.
const DELAY: Duration = Duration::from_secs(1);
const EVERY: Duration = Duration::from_millis(200);

/// Starts the drawing thread if progress is wanted; later calls do nothing.
pub fn init(quiet: bool) {
    let wanted = match std::env::var("SLUICE_PROGRESS").as_deref() {
        Ok("always") => true,
        Ok("never") => false,
        _ => !quiet && std::io::stderr().is_terminal(),
    };
    if !wanted || STATE.get().is_some() {
        return;
    }
    let forced = std::env::var("SLUICE_PROGRESS").as_deref() == Ok("always");
    let state = State {
        stage: Mutex::new((String::new(), 0)),
        done: AtomicU64::new(0),
        drawn: AtomicBool::new(false),
        started: Instant::now(),
        forced,
    };
    if STATE.set(state).is_err() {
        return;
    }
    let delay = if forced { Duration::ZERO } else { DELAY };
    let spawned = std::thread::Builder::new()
        .name("progress".into())
        .spawn(move || loop {
            std::thread::sleep(EVERY);
            let Some(s) = STATE.get() else { return };
            if s.started.elapsed() < delay {
                continue;
            }
            // Drawn under the lock: once `clear` has run, nothing is drawn.
            let Ok(stage) = s.stage.lock() else { return };
            draw(s, &stage);
            drop(stage);
        });
    // No thread, no line: the work goes on without it.
    drop(spawned);
}

/// A new stage: `what` is shown with a count of `total` things (0 when
/// unknown), which [`tick`] advances.
pub fn stage(what: &str, total: u64) {
    if let Some(s) = STATE.get() {
        if let Ok(mut st) = s.stage.lock() {
            *st = (what.to_owned(), total);
            s.done.store(0, Ordering::Relaxed);
            if s.forced {
                draw(s, &st);
            }
        }
    }
}

/// `n` more things of the current stage done.
pub fn tick(n: u64) {
    if let Some(s) = STATE.get() {
        s.done.fetch_add(n, Ordering::Relaxed);
    }
}

/// The work is done (or output begins): the line is cleared and stays so.
pub fn clear() {
    if let Some(s) = STATE.get() {
        if let Ok(mut st) = s.stage.lock() {
            st.0.clear();
            erase(s);
        }
    }
}

/// Before another line on the terminal (a warning, output): the progress
/// line is erased, and drawn again at the next redraw if work goes on.
pub fn interrupt() {
    if let Some(s) = STATE.get() {
        if s.drawn.load(Ordering::Relaxed) {
            if let Ok(_st) = s.stage.lock() {
                erase(s);
            }
        }
    }
}

/// Draws the line for `stage` (held locked by the caller).
fn draw(s: &State, stage: &(String, u64)) {
    if stage.0.is_empty() {
        return;
    }
    let done = s.done.load(Ordering::Relaxed);
    let line = match (done, stage.1) {
        (0, _) => format!("{}…", stage.0),
        (d, 0) => format!("{}… {d}", stage.0),
        (d, t) => format!("{}… {d}/{t}", stage.0),
    };
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r\x1b[K{line} ({:.0} s)",
        s.started.elapsed().as_secs_f64()
    );
    let _ = err.flush();
    s.drawn.store(true, Ordering::Relaxed);
}

fn erase(s: &State) {
    if s.drawn.swap(false, Ordering::Relaxed) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K");
        let _ = err.flush();
    }
}
