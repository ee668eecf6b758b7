//! How a data-path worker waits: `ppoll` on its TAP queue, its UDP socket and its [`Waker`],
//! with the node's next deadline as the timeout.
//!
//! Owns the worker's waker (an eventfd) and nothing else. Readiness is level-triggered: a wait
//! returns at once while a descriptor still has something to read, so the worker reads a bounded
//! batch per turn and never has to drain a descriptor to learn it is empty. That is the plaintext
//! relay's loop (scripts/bench-relay.c), the floor of a userspace tunnel: one wait, one read,
//! one send per packet, with no read that finds nothing and no second wait in between, as an
//! edge-triggered loop needs.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Wakes a worker from another thread (the duties wake worker 0 after changing the node).
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    pub fn new() -> io::Result<Waker> {
        // SAFETY: eventfd with valid flags; a non-negative result is a new descriptor we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        Ok(Waker {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Makes the worker's next (or current) wait return. A full counter (2^64 − 2 wakes not yet
    /// seen) already wakes it, so that error is not one.
    pub fn wake(&self) -> io::Result<()> {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to a descriptor we own.
        let written = unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if written < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Resets the counter, so the waker stops being readable until the next `wake`.
    fn clear(&self) {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer from a descriptor we own; an empty
        // counter returns EAGAIN (non-blocking), which is fine.
        unsafe { libc::read(self.fd.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
    }
}

/// What one wait found ready.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ready {
    pub tap: bool,
    pub udp: bool,
    pub woken: bool,
    /// The TAP descriptor reports an error or hang-up: the device was detached or deleted. That
    /// does not clear, and a level-triggered wait would return at once for ever, so the worker
    /// stops instead (the daemon exits with an error, and its supervisor restarts it).
    pub tap_failed: bool,
}

/// The descriptors a worker waits on.
pub struct Readiness {
    fds: [libc::pollfd; 3],
}

impl Readiness {
    pub fn new(tap: RawFd, udp: RawFd, waker: &Waker) -> Readiness {
        let entry = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        Readiness {
            fds: [entry(tap), entry(udp), entry(waker.fd.as_raw_fd())],
        }
    }

    /// Waits until a descriptor is readable (or failed: the read that follows reports it) or
    /// `timeout` passes (`None`: no timeout). A signal ending the wait early is not an error.
    pub fn wait(&mut self, timeout: Option<Duration>, waker: &Waker) -> io::Result<Ready> {
        let limit = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
        });
        let limit_ptr = limit
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: ppoll on our 3 live pollfds, a timespec that outlives the call (or null), and
        // no signal mask (null).
        let n = unsafe {
            libc::ppoll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                limit_ptr,
                std::ptr::null(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(Ready::default())
            } else {
                Err(e)
            };
        }
        let hit = |i: usize| self.fds[i].revents != 0;
        // A UDP socket's POLLERR is a pending error the next receive returns and clears (meshd
        // does not enable IP_RECVERR's error queue), so only the TAP's is final.
        let failed = libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;
        let ready = Ready {
            tap: hit(0),
            udp: hit(1),
            woken: hit(2),
            tap_failed: self.fds[0].revents & failed != 0,
        };
        if ready.woken {
            waker.clear();
        }
        Ok(ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_ends_the_wait_once_and_a_timeout_ends_it_without_one() {
        let waker = Waker::new().unwrap();
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let mut readiness = Readiness::new(a.as_raw_fd(), a.as_raw_fd(), &waker);
        let idle = readiness
            .wait(Some(Duration::from_millis(1)), &waker)
            .unwrap();
        assert_eq!(idle, Ready::default());
        waker.wake().unwrap();
        waker.wake().unwrap();
        let woken = readiness.wait(None, &waker).unwrap();
        assert_eq!(
            woken,
            Ready {
                woken: true,
                ..Ready::default()
            }
        );
        // Seen: the next wait times out again.
        let idle = readiness.wait(Some(Duration::ZERO), &waker).unwrap();
        assert!(!idle.woken);
        // Level-triggered: a readable socket stays ready until it is read.
        b.send(b"x").unwrap();
        for _ in 0..2 {
            let ready = readiness.wait(Some(Duration::ZERO), &waker).unwrap();
            assert!(ready.tap && ready.udp && !ready.tap_failed);
        }
    }

    #[test]
    fn a_hung_up_device_is_reported_as_failed() {
        let waker = Waker::new().unwrap();
        let (reader, writer) = std::io::pipe().unwrap();
        let (a, _b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let mut readiness = Readiness::new(reader.as_raw_fd(), a.as_raw_fd(), &waker);
        let idle = readiness.wait(Some(Duration::ZERO), &waker).unwrap();
        assert!(!idle.tap_failed);
        drop(writer);
        let ready = readiness.wait(Some(Duration::ZERO), &waker).unwrap();
        assert!(ready.tap_failed, "{ready:?}");
        assert!(!ready.udp);
    }
}
