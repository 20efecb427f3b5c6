//! CPU time and memory of a process, read from Linux's `/proc/<pid>/stat` and `status`.

use std::io;

/// What a process has used so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    /// User plus system CPU time of all its threads, past and present.
    pub cpu_seconds: f64,
    /// Resident memory now (`VmRSS`).
    pub rss_bytes: u64,
    /// The most resident memory it ever had (`VmHWM`).
    pub peak_rss_bytes: u64,
}

/// Reads the CPU time and memory of process `pid`.
///
/// # Errors
///
/// When the process is gone or `/proc` does not have the expected fields.
pub fn sample(pid: u32) -> io::Result<ProcessSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let invalid = |what| io::Error::new(io::ErrorKind::InvalidData, what);
    let ticks = cpu_ticks(&stat).ok_or_else(|| invalid("no CPU times in /proc/<pid>/stat"))?;
    let kib = |key| status_kib(&status, key).ok_or_else(|| invalid("no memory in /proc status"));
    Ok(ProcessSample {
        cpu_seconds: ticks as f64 / rustix::param::clock_ticks_per_second() as f64,
        rss_bytes: kib("VmRSS")? * 1024,
        peak_rss_bytes: kib("VmHWM")? * 1024,
    })
}

/// `utime + stime` from the text of `/proc/<pid>/stat`, in clock ticks.
fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name in field 2 may hold spaces and parentheses, so fields are counted from
    // its closing parenthesis: state is field 3, utime 14 and stime 15.
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// The value of a `Key:   1234 kB` line of `/proc/<pid>/status`, in KiB.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_ticks_after_an_odd_command_name() {
        let stat = "4242 (fwd (2) loki) S 1 4242 4242 0 -1 4194304 900 0 0 0 \
                    150 25 0 0 20 0 3 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(175));
        assert_eq!(cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn reads_memory_lines() {
        let status = "Name:\tfwd2loki\nVmHWM:\t   40960 kB\nVmRSS:\t    6144 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(40_960));
        assert_eq!(status_kib(status, "VmRSS"), Some(6_144));
        assert_eq!(status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn samples_this_process() {
        let sample = sample(std::process::id()).unwrap();
        assert!(sample.rss_bytes > 0);
        assert!(sample.peak_rss_bytes >= sample.rss_bytes);
    }
}
