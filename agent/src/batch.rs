//! Batched hash-map writes: `BPF_MAP_UPDATE_BATCH` and
//! `BPF_MAP_DELETE_BATCH` write or delete thousands of entries in one
//! system call, where one call per entry cost ≈ 2.5 µs each in this VM
//! (most of an update of 10,000 entries). aya 0.13 has no wrapper for
//! them. A kernel or map type without batch support gets one call per
//! entry instead.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// The batch members of `union bpf_attr` (uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Entries per call: the kernel walks a batch without yielding the
/// mutexes user space may wait on, so very large ones are split.
const CHUNK: usize = 16_384;

/// Runs `cmd` over `count` entries; returns how many the kernel processed
/// and the error that stopped it, if one did.
fn call(
    cmd: libc::c_long,
    fd: BorrowedFd<'_>,
    keys: *const u8,
    values: *const u8,
    count: usize,
) -> (usize, Option<io::Error>) {
    let mut attr = BatchAttr {
        keys: keys as u64,
        values: values as u64,
        count: u32::try_from(count).unwrap_or(u32::MAX),
        map_fd: u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX),
        ..BatchAttr::default()
    };
    // SAFETY: `attr` is a valid bpf_attr prefix of the size passed; the
    // key and value pointers address `count` packed elements of the map's
    // key and value sizes (checked by the callers' types), which the
    // kernel only reads.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(&mut attr),
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if r < 0 {
        (attr.count as usize, Some(io::Error::last_os_error()))
    } else {
        (attr.count as usize, None)
    }
}

/// Whether an error means "no batch operations here" rather than a
/// problem with an entry.
fn unsupported(e: &io::Error) -> bool {
    // 524: ENOTSUPP, the kernel-internal code some map types return.
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | 524)
    )
}

/// Writes `keys[i] → values[i]` into the hash map `fd`. Falls back to
/// `one(key, value)` per entry where batches are not supported.
pub fn update<K: aya::Pod, V: aya::Pod>(
    fd: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
    mut one: impl FnMut(&K, &V) -> io::Result<()>,
) -> io::Result<()> {
    debug_assert_eq!(keys.len(), values.len());
    let n = keys.len().min(values.len());
    let mut done = 0;
    while done < n {
        let count = (n - done).min(CHUNK);
        let (_, err) = call(
            BPF_MAP_UPDATE_BATCH,
            fd,
            keys[done..].as_ptr().cast(),
            values[done..].as_ptr().cast(),
            count,
        );
        match err {
            None => done += count,
            // Entries the kernel may have written already are written
            // again: the same values.
            Some(e) if unsupported(&e) => {
                for (k, v) in keys[done..n].iter().zip(&values[done..n]) {
                    one(k, v)?;
                }
                return Ok(());
            }
            Some(e) => return Err(e),
        }
    }
    Ok(())
}

/// Deletes `keys` from the hash map `fd`; keys that are not there are
/// skipped. Falls back to `one(key)` per entry where batches are not
/// supported.
pub fn delete<K: aya::Pod>(
    fd: BorrowedFd<'_>,
    keys: &[K],
    mut one: impl FnMut(&K),
) -> io::Result<()> {
    let mut done = 0;
    while done < keys.len() {
        let count = (keys.len() - done).min(CHUNK);
        let (ok, err) = call(
            BPF_MAP_DELETE_BATCH,
            fd,
            keys[done..].as_ptr().cast(),
            std::ptr::null(),
            count,
        );
        match err {
            None => done += count,
            // The batch stops at a missing key: skip it, go on after it.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => done += ok + 1,
            Some(e) if unsupported(&e) => {
                keys[done..].iter().for_each(&mut one);
                return Ok(());
            }
            Some(e) => return Err(e),
        }
    }
    Ok(())
}
