//! The global allocator of Herald's binaries: mimalloc instead of glibc's malloc.
//!
//! Why: every message a service handles allocates and frees many small buffers (AMQP frames,
//! headers, JSON, HTTP bodies). Profiling the dispatcher at 7,000 deliveries/s showed glibc's
//! `malloc`, `_int_free` and `malloc_consolidate` taking about a tenth of its CPU; with mimalloc
//! the dispatcher spends 13 % less CPU per delivery (`BENCHMARKS.md`, hundred-endpoints).
//!
//! mimalloc's default commits whole arenas eagerly, which raised each service's resident memory
//! by 20–60 MB for no speed. Before `main` runs, this crate sets the default of
//! `arena_eager_commit` to off, so memory is committed as it is used. The `MIMALLOC_*`
//! environment variables still override it (`MIMALLOC_ARENA_EAGER_COMMIT=1` restores mimalloc's
//! own default).
//!
//! A binary opts in with `use herald_alloc as _;`: linking this crate installs the allocator.
#![allow(unsafe_code)]

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in mimalloc's `mi_option_e` (v3).
#[cfg(target_os = "linux")]
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Runs from `.init_array`, before `main` and before the Rust runtime allocates anything.
#[cfg(target_os = "linux")]
extern "C" fn configure() {
    // SAFETY: sets a plain integer option while nothing else runs (single-threaded start-up).
    // Only the default: an option mimalloc found in the environment (under any of the names
    // it accepts) is marked initialised and left as the environment says.
    unsafe { libmimalloc_sys::mi_option_set_default(ARENA_EAGER_COMMIT, 0) }
}

#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static CONFIGURE: extern "C" fn() = configure;

/// The option is set before `main`: on Linux, eager arena commit is off unless the environment
/// asks for it.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn arena_eager_commit_is_off_before_main() {
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_some() {
            return;
        }
        // SAFETY: reads a plain integer option.
        let v = unsafe { libmimalloc_sys::mi_option_get(super::ARENA_EAGER_COMMIT) };
        assert_eq!(v, 0);
    }
}
