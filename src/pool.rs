//! A fixed pool of worker threads that take jobs from a crossbeam channel.

use std::io;
use std::panic::AssertUnwindSafe;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;

/// W threads, each taking one job at a time from a shared channel until the channel is closed
/// (every sender dropped) and empty. A job that panics ends, and its worker takes the next: what
/// the job held is released as it unwinds (the server's jobs report themselves from a guard).
///
/// Shutdown is: stop sending, drop the sender, [`WorkerPool::join`]. Jobs still queued are handed
/// to workers first, so the job handler decides what a late job means (the server tells the
/// waiting client that it is shutting down).
#[derive(Debug)]
pub struct WorkerPool {
    workers: Vec<JoinHandle<()>>,
}

impl WorkerPool {
    /// Starts `size` workers that run `handle` on each job received from `jobs`.
    pub fn spawn<J, F>(size: usize, jobs: Receiver<J>, handle: F) -> io::Result<WorkerPool>
    where
        J: Send + 'static,
        F: Fn(J) + Send + Sync + Clone + 'static,
    {
        let mut workers = Vec::with_capacity(size);
        for index in 0..size {
            let jobs = jobs.clone();
            let handle = handle.clone();
            let worker = std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || {
                    for job in jobs.iter() {
                        // The handler owns nothing this loop uses again, so nothing is left
                        // half-changed for the next job.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| handle(job)));
                    }
                })?;
            workers.push(worker);
        }
        Ok(WorkerPool { workers })
    }

    /// How many workers the pool has.
    pub fn size(&self) -> usize {
        self.workers.len()
    }

    /// Waits for every worker to finish; returns how many of them died (none, since jobs' panics
    /// are caught, unless a panic hook itself panics).
    pub fn join(self) -> usize {
        self.workers
            .into_iter()
            .map(JoinHandle::join)
            .filter(Result::is_err)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Runs `jobs` on `size` workers that add each job to a counter (job 0 panics instead);
    /// returns the counter and how many workers died.
    fn run_counting(size: usize, jobs: &[usize]) -> (usize, usize) {
        let (tx, rx) = crossbeam_channel::bounded(4);
        let done = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&done);
        let pool = WorkerPool::spawn(size, rx, move |n: usize| {
            assert!(n != 0, "job 0 panics on purpose");
            counter.fetch_add(n, Ordering::SeqCst);
        })
        .unwrap();
        assert_eq!(pool.size(), size);
        for &n in jobs {
            tx.send(n).unwrap();
        }
        drop(tx);
        let died = pool.join();
        (done.load(Ordering::SeqCst), died)
    }

    #[test]
    fn every_job_runs_once_and_join_returns_after_the_channel_closes() {
        assert_eq!(run_counting(3, &[1; 100]), (100, 0));
    }

    #[test]
    fn a_job_that_panics_does_not_take_its_worker_with_it() {
        assert_eq!(run_counting(1, &[0, 1, 0, 2]), (3, 0));
    }
}
