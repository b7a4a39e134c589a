//! Keeps an idle `dockop run` at the memory it uses, not at its startup peak (glibc malloc).
//!
//! - [`configure`], first thing in `main`: one malloc arena. By default glibc gives each thread that
//!   allocates under contention an arena of its own, and each keeps its own freed space. For a process
//!   this small and this idle the extra arenas are pure overhead: with 200 objects they held about
//!   1.5 MiB of freed space. Contention is moot: the tokio runtime has two workers and each thread keeps
//!   its own cache of small blocks (tcache) in front of the arena.
//! - [`release_free_memory`]: glibc returns only the free space at the very top of the heap to the OS.
//!   `malloc_trim(0)` also releases the free pages inside it (`MADV_DONTNEED`). The controller calls it
//!   when its reconcile queue drains and at each periodic resync; a call takes well under a millisecond
//!   on a heap this size.
//!
//! Off glibc both are no-ops.

/// Sets malloc up for a small long-running process; call before any thread starts.
pub fn configure() {
    imp::configure();
}

/// Returns freed heap pages to the OS; true when some were.
pub fn release_free_memory() -> bool {
    imp::trim()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod imp {
    pub fn configure() {
        // SAFETY: `mallopt` takes plain integers and no pointers; M_ARENA_MAX is a documented parameter.
        // Called before the runtime's threads exist.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }

    pub fn trim() -> bool {
        // SAFETY: `malloc_trim` takes no pointers and walks glibc's own arenas under their locks; it is
        // thread-safe and has no preconditions.
        unsafe { libc::malloc_trim(0) == 1 }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub fn configure() {}

    pub fn trim() -> bool {
        false
    }
}

#[cfg(test)]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn rss_anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("RssAnon")
    }

    #[test]
    fn releases_freed_memory_and_keeps_live_data() {
        // Fragment the heap as a burst of work does: 16 MiB in 64 KiB blocks (below the mmap threshold),
        // every other one freed, so no free space sits at the top where malloc would trim it by itself.
        let blocks: Vec<Vec<u8>> = (0..256).map(|i| vec![i as u8; 64 * 1024]).collect();
        let kept: Vec<(usize, Vec<u8>)> = blocks.into_iter().enumerate().step_by(2).collect();
        let before = rss_anon_kib();
        assert!(release_free_memory(), "nothing was released");
        let after = rss_anon_kib();
        assert!(
            after + 4 * 1024 <= before,
            "RssAnon {before} KiB -> {after} KiB: under 4 MiB of the 8 MiB freed came back"
        );
        assert!(
            kept.iter()
                .all(|(i, b)| b.len() == 64 * 1024 && b.iter().all(|&x| x == *i as u8)),
            "live data untouched"
        );
    }
}
