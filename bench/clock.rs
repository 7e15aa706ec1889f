//! The clock the bench's examples report their busy window on (Python's `time.perf_counter()`).

/// Seconds on CLOCK_MONOTONIC.
pub fn monotonic_s() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid out-parameter for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}
