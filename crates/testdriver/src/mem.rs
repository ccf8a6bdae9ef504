//! Guest memory: one memfd, mapped shared; guest-physical address = file offset.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

/// Errors of guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemError {
    /// memfd_create failed.
    #[error("cannot create memfd")]
    Memfd(#[source] io::Error),
    /// Sizing the memfd failed.
    #[error("cannot size memfd to {size} bytes")]
    Truncate {
        /// Requested size.
        size: usize,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// mmap failed.
    #[error("cannot map {size} bytes of guest memory")]
    Mmap {
        /// Requested size.
        size: usize,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Size zero.
    #[error("guest memory size is zero")]
    ZeroSize,
    /// Access outside guest memory.
    #[error("access of {len} bytes at {gpa:#x} is outside guest memory of {size} bytes")]
    OutOfRange {
        /// Guest-physical address.
        gpa: u64,
        /// Access length.
        len: usize,
        /// Memory size.
        size: usize,
    },
    /// Misaligned atomic access.
    #[error("atomic access at {gpa:#x} is not {align}-byte aligned")]
    Misaligned {
        /// Guest-physical address.
        gpa: u64,
        /// Needed alignment.
        align: usize,
    },
}

/// Shared guest memory backed by a memfd.
#[derive(Debug)]
pub struct GuestMem {
    base: NonNull<u8>,
    size: usize,
    fd: OwnedFd,
}

// SAFETY: GuestMem owns its mapping exclusively within this process (no aliasing
// Rust references are handed out beyond `&self` borrows), and every access goes
// through raw-pointer copies or atomics, which are valid from any thread.
unsafe impl Send for GuestMem {}

impl GuestMem {
    /// Create `size` bytes of zeroed shared memory.
    pub fn new(size: usize) -> Result<Self, MemError> {
        if size == 0 {
            return Err(MemError::ZeroSize);
        }
        // SAFETY: the name is a valid NUL-terminated C string; flags are valid.
        let raw = unsafe { libc::memfd_create(c"quiver-guest".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(MemError::Memfd(io::Error::last_os_error()));
        }
        // SAFETY: raw is a fresh fd returned by memfd_create and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let len = libc::off_t::try_from(size).map_err(|e| MemError::Truncate {
            size,
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        // SAFETY: fd is a valid memfd owned by `fd` for the duration of the call.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } < 0 {
            return Err(MemError::Truncate {
                size,
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: mapping a fresh shared region of `size` bytes of a valid fd at
        // a kernel-chosen address; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(MemError::Mmap {
                size,
                source: io::Error::last_os_error(),
            });
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or(MemError::Mmap {
            size,
            source: io::Error::other("mmap returned null"),
        })?;
        Ok(GuestMem { base, size, fd })
    }

    /// The memfd (shared with the backend in SET_MEM_TABLE).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Host virtual address of GPA 0 (the "user address" of the region).
    pub fn host_addr(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    fn offset(&self, gpa: u64, len: usize) -> Result<usize, MemError> {
        let err = || MemError::OutOfRange {
            gpa,
            len,
            size: self.size,
        };
        let off = usize::try_from(gpa).map_err(|_e| err())?;
        let end = off.checked_add(len).ok_or_else(err)?;
        if end > self.size {
            return Err(err());
        }
        Ok(off)
    }

    /// Copy guest memory at `gpa` into `buf`.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let off = self.offset(gpa, buf.len())?;
        // SAFETY: [off, off+len) lies inside the mapping (checked above), which
        // lives as long as self; buf is a distinct Rust allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.as_ptr().add(off), buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    /// Copy `data` into guest memory at `gpa`.
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        let off = self.offset(gpa, data.len())?;
        // SAFETY: [off, off+len) lies inside the writable mapping (checked above),
        // which lives as long as self; data is a distinct Rust allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.as_ptr().add(off), data.len())
        };
        Ok(())
    }

    /// Read a little-endian u16.
    #[cfg(test)]
    pub fn read_u16(&self, gpa: u64) -> Result<u16, MemError> {
        let mut b = [0u8; 2];
        self.read(gpa, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Read a little-endian u32.
    pub fn read_u32(&self, gpa: u64) -> Result<u32, MemError> {
        let mut b = [0u8; 4];
        self.read(gpa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Write a little-endian u16.
    pub fn write_u16(&self, gpa: u64, v: u16) -> Result<(), MemError> {
        self.write(gpa, &v.to_le_bytes())
    }

    fn atomic_u16(&self, gpa: u64) -> Result<&AtomicU16, MemError> {
        let off = self.offset(gpa, 2)?;
        if off % 2 != 0 {
            return Err(MemError::Misaligned { gpa, align: 2 });
        }
        // SAFETY: off..off+2 is inside the mapping and 2-aligned (the mapping is
        // page-aligned); the mapping outlives the returned borrow of self. Only
        // atomic accesses are made through this reference in this process.
        Ok(unsafe { &*self.base.as_ptr().add(off).cast::<AtomicU16>() })
    }

    /// Load a ring index written by the device, ordering later reads after it.
    pub fn load_u16_acquire(&self, gpa: u64) -> Result<u16, MemError> {
        // Ring fields are little-endian (VIRTIO 1.x); this crate runs on LE hosts only.
        Ok(u16::from_le(self.atomic_u16(gpa)?.load(Ordering::Acquire)))
    }

    /// Publish a ring index, ordering earlier writes before it.
    pub fn store_u16_release(&self, gpa: u64, v: u16) -> Result<(), MemError> {
        self.atomic_u16(gpa)?.store(v.to_le(), Ordering::Release);
        Ok(())
    }
}

impl Drop for GuestMem {
    fn drop(&mut self) {
        // SAFETY: base/size describe the mapping created in `new`, unmapped once here.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.size) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_and_bounds() {
        let m = GuestMem::new(8192).expect("memfd");
        m.write(100, b"hello").expect("write");
        let mut b = [0u8; 5];
        m.read(100, &mut b).expect("read");
        assert_eq!(&b, b"hello");
        m.write_u16(4094, 0xbeef).expect("write");
        assert_eq!(m.read_u16(4094).expect("read"), 0xbeef);
        assert!(matches!(
            m.read(8190, &mut [0u8; 4]),
            Err(MemError::OutOfRange { .. })
        ));
        assert!(matches!(
            m.read(u64::MAX, &mut [0u8; 1]),
            Err(MemError::OutOfRange { .. })
        ));
        assert!(matches!(
            m.load_u16_acquire(3),
            Err(MemError::Misaligned { .. })
        ));
        m.store_u16_release(8190, 7).expect("store");
        assert_eq!(m.read_u16(8190).expect("read"), 7);
    }
}
