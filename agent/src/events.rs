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

    /// Takes every event the programs wrote since the last call, CPU by
    /// CPU, each stamped with the time of this call. Only one process may
    /// do this at a time (`sluice agent --observe` or `sluice observe`).
    pub fn read(&mut self) -> Vec<Event> {
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
                out.extend(Event::from_raw(&raw, now));
                tail = tail.wrapping_add(1);
            }
            // Release: the slots are read before the writer may reuse them.
            tail_word.store(tail, Ordering::Release);
        }
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
    fn cpu_lists() {
        assert_eq!(highest_cpu("0-1\n"), Some(1));
        assert_eq!(highest_cpu("0"), Some(0));
        assert_eq!(highest_cpu("0-3,8-11"), Some(11));
        assert_eq!(highest_cpu("0,2,5"), Some(5));
        assert_eq!(highest_cpu(""), None);
        assert_eq!(highest_cpu("0-x"), None);
    }
}
