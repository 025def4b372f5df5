#![forbid(unsafe_code)]

// Each SSH packet allocates and frees buffers of up to 64 KiB on the runtime's worker threads;
// glibc's per-thread arenas hand that memory back to the kernel and fault it in again, which cost
// the bastion about a sixth of its CPU time per byte in the benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    stapsteen::cli::main()
}
