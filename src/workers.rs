//! Jobs shared out among a few scoped threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Runs `work` once on each job, on up to `threads` scoped threads that each take the next
/// job as they finish one; returns when every job is done. The threads never call setns:
/// jobs carry sockets already made in their namespaces (netns.rs).
pub fn run_on_threads<J: Send>(jobs: Vec<J>, threads: usize, work: impl Fn(J) + Sync) {
    let jobs: Vec<Mutex<Option<J>>> = jobs.into_iter().map(|j| Mutex::new(Some(j))).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.min(jobs.len()) {
            scope.spawn(|| {
                while let Some(slot) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let job = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                    if let Some(job) = job {
                        work(job);
                    }
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_runs_once() {
        let done: Vec<AtomicUsize> = (0..100).map(|_| AtomicUsize::new(0)).collect();
        run_on_threads((0..100).collect(), 4, |i: usize| {
            done[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(done.iter().all(|d| d.load(Ordering::Relaxed) == 1));
        run_on_threads(Vec::<usize>::new(), 4, |_| unreachable!());
    }
}
