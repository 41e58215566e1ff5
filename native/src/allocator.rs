//! The C allocator's policy for long numeric runs. glibc hands every large buffer (a layer's activations or
//! gradients) to the kernel on `free` and maps fresh zeroed pages on the next `malloc`: a training step then spends a
//! third of its time in page faults (measured with `perf` on WARN). Keeping freed memory in the heap makes the next
//! step reuse it, as PyTorch's caching allocator does; the peak memory is unchanged.

/// Tells glibc to serve large buffers from the heap and never trim it. A no-op elsewhere.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before the program's threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
