//! Child processes dockop runs under a time limit (git, registry credential helpers): each in its own
//! process group, so a timeout kills the whole group, grandchildren that hold secrets included.

/// SIGKILL to the process group `pgid`; a group already gone is not an error.
pub fn kill_group(pgid: u32) -> Result<(), rustix::io::Errno> {
    let Some(pid) = i32::try_from(pgid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return Ok(());
    };
    match rustix::process::kill_process_group(pid, rustix::process::Signal::KILL) {
        Err(e) if e != rustix::io::Errno::SRCH => Err(e),
        _ => Ok(()),
    }
}
