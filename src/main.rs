//! The `portico` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc malloc: per-request buffers (a FastCGI exchange allocates and
/// frees 64 KiB blocks) made glibc's arena locks and `malloc_consolidate` about 40% of
/// the gateway's CPU under load (perf, `benches/php.sh`); mimalloc's thread-local free
/// lists avoid both, and it returns freed memory to the system, keeping RSS flat.
///
/// Through [`Mimalloc`] rather than the `mimalloc` crate's allocator, which asks for
/// every block with `mi_malloc_aligned`.
#[global_allocator]
static GLOBAL: Mimalloc = Mimalloc;

/// mimalloc, asked for word-aligned blocks with plain `mi_malloc`.
///
/// mimalloc's aligned entry point takes its fast path only for blocks up to 1 KiB; a
/// bigger one whose size is not a power of two (a boxed request future, a hyper buffer)
/// is over-allocated and aligned by hand, which marks its page as holding interior
/// pointers and slows its free too. Every mimalloc block is at least word-aligned (its
/// sizes are multiples of 8 from a 16-byte-aligned page start), so layouts that ask for
/// no more than that take the plain calls, as Rust's own `System` allocator does with
/// malloc; only stricter alignments use the aligned ones. Callgrind, `GET /echo`: 3.4
/// of the ~16 allocations per request took the slow path and 2.7 of them the
/// over-allocation, about 1,300 of 13,900 instructions.
struct Mimalloc;

/// The alignment every mimalloc block has.
const WORD: usize = std::mem::size_of::<usize>();

// SAFETY: each method forwards to the mimalloc call with the same contract (a block of
// at least `size` bytes aligned to `layout.align()`, or null), choosing the unaligned
// call only when mimalloc's word alignment already satisfies the layout; `dealloc` and
// `realloc` receive blocks that came from these calls, which `mi_free` and `mi_realloc*`
// accept whichever of them allocated.
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= WORD {
                libmimalloc_sys::mi_malloc(layout.size()).cast()
            } else {
                libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= WORD {
                libmimalloc_sys::mi_zalloc(layout.size()).cast()
            } else {
                libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        // SAFETY: see the impl.
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= WORD {
                libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    // Run by a web server as the CGI-side checker (PORTICO_PROBE=serve-cgi): before the
    // command line is parsed, since a web server may pass query words as arguments.
    if portico::probe::cgi_probe_requested() {
        return portico::probe::serve_cgi::run_as_cgi();
    }
    let cli = portico::cli::Cli::parse();
    portico::cli::run(cli, portico::backend::Registry::new())
}
