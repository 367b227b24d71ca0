//! The reading side of the per-CPU event rings (`SL_EVENTS`: one
//! `struct sl_ring` per possible CPU, in an array map that is mapped into
//! this process). The programs of each CPU write slots and advance that
//! ring's `head`; the one reader takes the slots up to `head` and advances
//! `tail`, which frees them. A full ring refuses events and counts them in
//! `lost`.

#![allow(unsafe_code)]

use crate::datapath::DatapathError;
use crate::maps::{Event, RawEvent, RingHeader, RING_SIZE, RING_SLOTS};
use aya::maps::MapData;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// `BPF_F_MMAPABLE` (uapi/linux/bpf.h).
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// The event rings of a loaded or pinned datapath, mapped shared and
/// writable (the reader writes `tail`).
pub struct EventRings {
    /// Keeps the map (and so the mapping's object) alive.
    _map: MapData,
    base: NonNull<u8>,
    len: usize,
    cpus: usize,
}

// SAFETY: the mapping is owned by this value and only accessed through
// `&self`/`&mut self`; the kernel side synchronises through `head`/`tail`.
unsafe impl Send for EventRings {}

impl EventRings {
    /// Maps `SL_EVENTS`. Refuses a map of another shape (another layout's
    /// pin, say) rather than reading it as rings.
    pub fn new(map: MapData) -> Result<EventRings, DatapathError> {
        let info = map
            .info()
            .map_err(|e| DatapathError::new(format!("SL_EVENTS: {e}")))?;
        if info.value_size() as usize != RING_SIZE || info.map_flags() & BPF_F_MMAPABLE == 0 {
            return Err(DatapathError::new(format!(
                "SL_EVENTS is not a map of {RING_SIZE}-byte mmapable event rings \
                 (value size {}, flags {:#x})",
                info.value_size(),
                info.map_flags()
            )));
        }
        let cpus = info.max_entries() as usize;
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        // Array elements are value_size rounded up to 8 bytes, which
        // RING_SIZE already is.
        let len = (cpus * RING_SIZE).div_ceil(page) * page;
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks
        // the length and the flags. Nothing else aliases it in this process.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(DatapathError::new(format!(
                "cannot map SL_EVENTS: {}",
                std::io::Error::last_os_error()
            )));
        }
        let base = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| DatapathError::new("mmap of SL_EVENTS returned null"))?;
        Ok(EventRings {
            _map: map,
            base,
            len,
            cpus,
        })
    }

    /// The ring header word at `offset` of CPU `cpu`'s ring.
    fn word(&self, cpu: usize, offset: usize) -> &AtomicU64 {
        debug_assert!(cpu < self.cpus && offset + 8 <= size_of::<RingHeader>());
        // SAFETY: in bounds (cpu < cpus, offset inside the header), 8-byte
        // aligned (page-aligned base, RING_SIZE and the offsets are
        // multiples of 8), and the kernel only ever accesses it whole.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(cpu * RING_SIZE + offset)
                .cast::<AtomicU64>()
        }
    }

    /// Takes every event the programs wrote since the last call, in the
    /// order of their ticks across CPUs, each stamped by `clock` (or with
    /// the time of this call without one). Only one process may do this at
    /// a time (`sluice agent --observe` or `sluice observe`).
    pub fn read(&mut self, clock: Option<&TickClock>) -> Vec<Event> {
        let now = std::time::SystemTime::now();
        let mut out = Vec::new();
        for cpu in 0..self.cpus {
            let head = self
                .word(cpu, offset_of!(RingHeader, head))
                .load(Ordering::Acquire);
            let tail_word = self.word(cpu, offset_of!(RingHeader, tail));
            let mut tail = tail_word.load(Ordering::Relaxed);
            if head.wrapping_sub(tail) > RING_SLOTS as u64 {
                // Only a reader killed mid-way through a store, or a
                // foreign writer, leaves this: start again from the head
                // rather than read slots that were overwritten.
                tail = head;
            }
            while tail != head {
                let slot = (tail % RING_SLOTS as u64) as usize;
                // SAFETY: in bounds (slot < RING_SLOTS, cpu < cpus), and
                // the writer does not touch slots between tail and head
                // until tail moves past them; volatile because the memory
                // is shared with the kernel.
                let raw: RawEvent = unsafe {
                    std::ptr::read_volatile(
                        self.base
                            .as_ptr()
                            .add(
                                cpu * RING_SIZE
                                    + size_of::<RingHeader>()
                                    + slot * size_of::<RawEvent>(),
                            )
                            .cast::<RawEvent>(),
                    )
                };
                let time = clock.map_or(now, |c| c.time_of(raw.jiffies));
                out.extend(Event::from_raw(&raw, time));
                tail = tail.wrapping_add(1);
            }
            // Release: the slots are read before the writer may reuse them.
            tail_word.store(tail, Ordering::Release);
        }
        // Each CPU's events are in order; merged, by time (stable).
        out.sort_by_key(|e| e.time);
        out
    }

    /// Events refused since the rings were created (full ring, or a
    /// program interrupted while writing one on the same CPU).
    pub fn lost(&self) -> u64 {
        (0..self.cpus)
            .map(|cpu| {
                self.word(cpu, offset_of!(RingHeader, lost))
                    .load(Ordering::Relaxed)
            })
            .sum()
    }
}

impl Drop for EventRings {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// Turns the kernel's ticks (`jiffies`, which events carry) into
/// wall-clock time: at tick `jiffies` it was `wall_ns` since the Unix
/// epoch, and ticks come `hz` per second. Precise to a tick (4 ms at the
/// common 250 Hz), as the coarse clock was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickClock {
    pub jiffies: u32,
    pub wall_ns: u64,
    pub hz: u32,
}

/// The tick rates Linux is built with (CONFIG_HZ); a measured rate is
/// rounded to the nearest when within 10% of it.
const HZ_CHOICES: [u32; 4] = [100, 250, 300, 1000];

impl TickClock {
    /// The calibration a map holds; `None` while it was not measured.
    pub fn from_value(v: abi::ClockValue) -> Option<TickClock> {
        (v.hz > 0).then_some(TickClock {
            jiffies: v.jiffies,
            wall_ns: v.wall_ns,
            hz: v.hz,
        })
    }

    pub fn to_value(self) -> abi::ClockValue {
        abi::ClockValue {
            wall_ns: self.wall_ns,
            jiffies: self.jiffies,
            hz: self.hz,
        }
    }

    /// The wall-clock time of tick `jiffies` (ticks are compared modulo
    /// 2^32: an event up to 2^31 ticks, weeks, away from the anchor).
    pub fn time_of(&self, jiffies: u32) -> std::time::SystemTime {
        let ticks = i128::from(jiffies.wrapping_sub(self.jiffies) as i32);
        let ns = i128::from(self.wall_ns) + ticks * 1_000_000_000 / i128::from(self.hz.max(1));
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
    }

    /// The tick rate from `ticks` counted over `elapsed`.
    pub fn hz_of(ticks: u32, elapsed: std::time::Duration) -> u32 {
        let secs = elapsed.as_secs_f64();
        if secs <= 0.0 {
            return 0;
        }
        let measured = f64::from(ticks) / secs;
        let nearest = HZ_CHOICES
            .iter()
            .copied()
            .min_by(|a, b| {
                (f64::from(*a) - measured)
                    .abs()
                    .total_cmp(&(f64::from(*b) - measured).abs())
            })
            .unwrap_or(250);
        if (f64::from(nearest) - measured).abs() <= 0.1 * f64::from(nearest) {
            nearest
        } else {
            measured.round() as u32
        }
    }
}

fn wall_ns(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A tick count and the wall-clock time it was read at: the middle of the
/// two readings of the clock around `read_ticks`.
pub fn tick_sample(
    read_ticks: impl FnOnce() -> Result<u32, DatapathError>,
) -> Result<(u32, std::time::SystemTime), DatapathError> {
    let before = std::time::SystemTime::now();
    let ticks = read_ticks()?;
    let after = std::time::SystemTime::now();
    let half = after.duration_since(before).unwrap_or_default() / 2;
    Ok((ticks, before + half))
}

impl TickClock {
    /// A clock anchored at sample `(jiffies, at)`.
    pub fn anchored(jiffies: u32, at: std::time::SystemTime, hz: u32) -> TickClock {
        TickClock {
            jiffies,
            wall_ns: wall_ns(at),
            hz,
        }
    }
}

/// The number of CPU ids the kernel may use (`/sys/devices/system/cpu/possible`
/// is a list of ranges; the highest id counts, not how many there are).
pub fn possible_cpus() -> Result<u32, DatapathError> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .map_err(|e| DatapathError::new(format!("reading the possible CPUs: {e}")))?;
    highest_cpu(&text)
        .map(|h| h + 1)
        .ok_or_else(|| DatapathError::new(format!("cannot read the CPU list {:?}", text.trim())))
}

fn highest_cpu(list: &str) -> Option<u32> {
    list.trim()
        .split(',')
        .map(|r| {
            r.rsplit('-')
                .next()
                .and_then(|n| n.trim().parse::<u32>().ok())
        })
        .try_fold(None, |best: Option<u32>, n| Some(best.max(Some(n?))))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_rates_round_to_the_kernel_choices() {
        use std::time::Duration;
        let ms = Duration::from_millis;
        // 100 ms of ticks, off by one either way.
        for (ticks, hz) in [
            (9, 100),
            (11, 100),
            (24, 250),
            (26, 250),
            (29, 300),
            (31, 300),
        ] {
            assert_eq!(TickClock::hz_of(ticks, ms(100)), hz, "{ticks}");
        }
        assert_eq!(TickClock::hz_of(101, ms(100)), 1000);
        // Not a usual rate: taken as measured.
        assert_eq!(TickClock::hz_of(5, ms(100)), 50);
        assert_eq!(TickClock::hz_of(5, Duration::ZERO), 0);
    }

    #[test]
    fn ticks_become_wall_clock_time_either_side_of_the_anchor() {
        use std::time::{Duration, UNIX_EPOCH};
        let c = TickClock {
            jiffies: u32::MAX - 10,
            wall_ns: 1_000_000_000_000,
            hz: 250,
        };
        let at = |ns: u64| UNIX_EPOCH + Duration::from_nanos(ns);
        assert_eq!(c.time_of(u32::MAX - 10), at(1_000_000_000_000));
        // 250 ticks later, across the 32-bit wrap: one second.
        assert_eq!(c.time_of(239), at(1_001_000_000_000));
        // A tick before the anchor: 4 ms earlier.
        assert_eq!(c.time_of(u32::MAX - 11), at(999_996_000_000));
        assert_eq!(TickClock::from_value(c.to_value()), Some(c));
        assert_eq!(TickClock::from_value(abi::ClockValue::default()), None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(highest_cpu("0-1\n"), Some(1));
        assert_eq!(highest_cpu("0"), Some(0));
        assert_eq!(highest_cpu("0-3,8-11"), Some(11));
        assert_eq!(highest_cpu("0,2,5"), Some(5));
        assert_eq!(highest_cpu(""), None);
        assert_eq!(highest_cpu("0-x"), None);
    }
}
