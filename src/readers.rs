//! How many of the serving threads wait in /dev/fuse for the next request.
//!
//! The kernel hands each request to the thread that has waited longest, so with every
//! thread waiting, a lone caller's requests go round all of them, each to a thread
//! whose caches are cold and whose CPU may be the other one. One waiting thread serves
//! a lone caller faster. So a thread that ends a request while another thread waits
//! does not go back: it parks here. It goes back when woken: a request that starts
//! while another is being served and no thread is left waiting (two callers at once)
//! wakes one. It also goes back on its own when it sees a stall (every `LOOK`: requests
//! in flight, none ended since the last look, no thread waiting: a copy-up holds up
//! another caller's request by two `LOOK`s at most), and after `PARK` whatever
//! happened, so an idle mount has every thread waiting in /dev/fuse and they all see
//! the mount go. A parked thread holds no lock: it parks after the reply and after
//! every local of its request is gone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// How often a parked thread looks for a stall: requests in flight, none ended since
/// the last look, and no thread waiting for the next one.
const LOOK: Duration = Duration::from_millis(2);
/// The longest a thread stays parked.
const PARK: Duration = Duration::from_millis(100);

pub struct Readers {
    /// Threads serving the mount (0: nobody parks, as in the unit tests).
    total: usize,
    /// Threads inside a request.
    active: AtomicUsize,
    /// Requests ended.
    done: AtomicUsize,
    parked: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Readers {
    pub fn new(total: usize) -> Readers {
        Readers {
            total,
            active: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// A request starts on this thread.
    pub fn start(&self) {
        let active = self.active.fetch_add(1, Ordering::Relaxed) + 1;
        if active >= 2 && active + self.parked.load(Ordering::Relaxed) >= self.total {
            self.wake.notify_one();
        }
    }

    /// The request that started on this thread is answered: park while another thread
    /// waits for the next one.
    pub fn finish(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
        let active = self.active.fetch_sub(1, Ordering::Relaxed) - 1;
        let parked = self.parked.load(Ordering::Relaxed);
        if self.total.saturating_sub(active + parked + 1) == 0 {
            return;
        }
        self.parked.fetch_add(1, Ordering::Relaxed);
        let since = Instant::now();
        let mut seen = self.done.load(Ordering::Relaxed);
        let mut g = self.lock.lock();
        loop {
            let woken = !self.wake.wait_for(&mut g, LOOK).timed_out();
            if woken || since.elapsed() >= PARK {
                break;
            }
            let done = self.done.load(Ordering::Relaxed);
            let active = self.active.load(Ordering::Relaxed);
            let parked = self.parked.load(Ordering::Relaxed);
            let waiting = self.total.saturating_sub(active + parked);
            if active > 0 && waiting == 0 && done == seen {
                break;
            }
            seen = done;
        }
        drop(g);
        self.parked.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::Readers;
    use std::time::{Duration, Instant};

    #[test]
    fn a_lone_request_parks_only_while_another_thread_waits() {
        // four threads, none busy: three others wait, so the one that ends parks
        let r = Readers::new(4);
        r.start();
        let t0 = Instant::now();
        r.finish();
        assert!(t0.elapsed() >= Duration::from_millis(1));
        // no thread count: never parks
        let r = Readers::new(0);
        r.start();
        let t0 = Instant::now();
        r.finish();
        assert!(t0.elapsed() < Duration::from_millis(1));
    }

    #[test]
    fn a_second_request_wakes_a_parked_thread() {
        let r = std::sync::Arc::new(Readers::new(2));
        let r2 = r.clone();
        // one thread ends a request while the other waits: it parks...
        let parked = std::thread::spawn(move || {
            r2.start();
            r2.finish();
        });
        while r.parked.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            std::thread::yield_now();
        }
        // ...and two requests at once with nobody left waiting wake it
        r.start();
        r.start();
        parked.join().unwrap();
        assert_eq!(r.parked.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
}
