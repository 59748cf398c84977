//! Batched map reads and deletes (`BPF_MAP_LOOKUP_BATCH`,
//! `BPF_MAP_DELETE_BATCH`): the sweeper and the listings walk tables of a
//! million entries with a few hundred system calls instead of two per entry.
//! aya 0.14 has no batch API, so this is the one place that calls `bpf(2)`
//! directly.

use std::{io, mem::size_of, os::fd::RawFd};

use aya::Pod;

use super::error::{DataplaneError, Result as KernelResult};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// `union bpf_attr`'s `batch` member.
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

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: `attr` is a valid, fully initialised `bpf_attr` prefix of the
    // size passed, and outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<BatchAttr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Entries per batch; larger than any hash bucket can grow.
const CHUNK: usize = 8192;

/// Every (key, value) of the hash map behind `fd`, in chunks.
///
/// # Errors
/// When the kernel refuses the lookup.
pub fn for_each<K: Pod + Default, V: Pod + Default>(
    fd: RawFd,
    mut f: impl FnMut(&[K], &[V]),
) -> io::Result<()> {
    let mut keys = vec![K::default(); CHUNK];
    let mut values = vec![V::default(); CHUNK];
    // Hash maps use a bucket index as the batch token.
    let mut token_in: u32 = 0;
    let mut token_out: u32 = 0;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                std::ptr::from_mut(&mut token_in) as u64
            },
            out_batch: std::ptr::from_mut(&mut token_out) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let n = attr.count as usize;
        match result {
            Ok(()) => f(&keys[..n], &values[..n]),
            // ENOENT: this was the last chunk (possibly empty).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                f(&keys[..n], &values[..n]);
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        token_in = token_out;
        first = false;
    }
}

/// Delete `keys` from the map behind `fd`; keys already gone are skipped.
/// Returns how many were deleted.
///
/// # Errors
/// When the kernel refuses the delete for another reason.
pub fn delete<K: Pod>(fd: RawFd, keys: &[K]) -> io::Result<u64> {
    let mut deleted = 0u64;
    let mut rest = keys;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(CHUNK)];
        let mut attr = BatchAttr {
            keys: chunk.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        let result = bpf(BPF_MAP_DELETE_BATCH, &mut attr);
        let done = attr.count as usize;
        deleted += done as u64;
        match result {
            Ok(()) => rest = &rest[chunk.len()..],
            // The key at `done` vanished meanwhile (the data path or another
            // sweep): skip it and go on.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                rest = &rest[(done + 1).min(rest.len())..]
            }
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// Delete `keys` from the hash map behind `fd`, in batches.
pub fn delete_keys<K: aya::Pod>(
    fd: std::os::fd::RawFd,
    name: &'static str,
    keys: &[K],
) -> KernelResult<u64> {
    delete(fd, keys).map_err(|source| DataplaneError::Batch { name, source })
}

/// Read the hash map behind `fd` in batches and delete the entries
/// `selected` picks; returns (entries read, entries deleted).
///
/// # Errors
/// When the kernel refuses a read or a delete.
pub fn delete_where<K: Pod + Default, V: Pod + Default>(
    fd: std::os::fd::RawFd,
    name: &'static str,
    mut selected: impl FnMut(&K, &V) -> bool,
) -> KernelResult<(u64, u64)> {
    let mut scanned = 0;
    let mut gone: Vec<K> = Vec::new();
    for_each::<K, V>(fd, |keys, values| {
        scanned += keys.len() as u64;
        gone.extend(
            keys.iter()
                .zip(values)
                .filter(|(k, v)| selected(k, v))
                .map(|(k, _)| *k),
        );
    })
    .map_err(|source| DataplaneError::Batch { name, source })?;
    Ok((scanned, delete_keys(fd, name, &gone)?))
}

/// A second descriptor of a live map, for work off the controller.
pub fn dup_fd(fd: std::os::fd::RawFd, name: &'static str) -> KernelResult<std::os::fd::OwnedFd> {
    // SAFETY: `fd` is a live map descriptor owned by the tables.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
        .try_clone_to_owned()
        .map_err(|source| DataplaneError::Batch { name, source })
}
