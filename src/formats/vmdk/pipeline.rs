//! Parallel grain compression: workers turn grains into stream records (grain marker +
//! zlib data + padding to a sector); the writer receives the records in submission order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::codec::{deflate_grain, new_deflater};
use super::header::SECTOR;
use super::marker::{grain_marker, GRAIN_MARKER_LEN};
use crate::formats::FormatError;

/// Grains in flight per worker: enough to keep every worker busy while the writer waits for
/// the oldest one, few enough to bound memory (a grain and its record each).
const JOBS_PER_WORKER: usize = 4;

struct Job {
    seq: u64,
    index: u64,
    lba: u64,
    data: Vec<u8>,
    out: Vec<u8>,
}

/// A finished record: `record` is ready to be written as is.
pub struct Done {
    seq: u64,
    pub index: u64,
    pub record: Vec<u8>,
    data: Vec<u8>,
}

pub struct Pipeline {
    /// The image being written, for error messages.
    path: PathBuf,
    jobs: Option<SyncSender<Job>>,
    results: Receiver<Result<Done, String>>,
    workers: Vec<JoinHandle<()>>,
    next_seq: u64,
    next_out: u64,
    pending: BTreeMap<u64, Done>,
    in_flight: usize,
    limit: usize,
    /// Buffers coming back from finished jobs, reused for new ones.
    spare: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Builds one record: marker, compressed grain, zero padding to a whole sector.
fn build_record(
    deflater: &mut flate2::Compress,
    lba: u64,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    out.clear();
    out.extend_from_slice(&[0u8; GRAIN_MARKER_LEN]);
    deflate_grain(deflater, data, out)?;
    let size = u32::try_from(out.len() - GRAIN_MARKER_LEN)
        .map_err(|_| "compressed grain too large".to_owned())?;
    out[..GRAIN_MARKER_LEN].copy_from_slice(&grain_marker(lba, size));
    out.resize((out.len() as u64).next_multiple_of(SECTOR) as usize, 0);
    Ok(())
}

impl Pipeline {
    fn failure(&self, reason: String) -> FormatError {
        FormatError::io(&self.path, std::io::Error::other(reason))
    }

    pub fn new(path: &Path, threads: usize) -> Pipeline {
        let threads = threads.max(1);
        let limit = threads * JOBS_PER_WORKER;
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(limit);
        let (done_tx, done_rx) = mpsc::channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let workers = (0..threads)
            .map(|_| {
                let job_rx = Arc::clone(&job_rx);
                let done_tx = done_tx.clone();
                std::thread::spawn(move || {
                    let mut deflater = new_deflater();
                    loop {
                        let job = match job_rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(mut job) = job else { return };
                        let result = build_record(&mut deflater, job.lba, &job.data, &mut job.out)
                            .map(|()| Done {
                                seq: job.seq,
                                index: job.index,
                                record: job.out,
                                data: job.data,
                            });
                        if done_tx.send(result).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        Pipeline {
            path: path.to_owned(),
            jobs: Some(job_tx),
            results: done_rx,
            workers,
            next_seq: 0,
            next_out: 0,
            pending: BTreeMap::new(),
            in_flight: 0,
            limit,
            spare: Vec::new(),
        }
    }

    /// Queues grain `index` (guest sector `lba`); hands records that are ready, in order, to
    /// `emit`.
    pub fn push(
        &mut self,
        index: u64,
        lba: u64,
        data: &[u8],
        emit: &mut dyn FnMut(&Done) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        while self.in_flight >= self.limit {
            self.receive_one(emit)?;
        }
        let (mut buf, out) = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        let job = Job {
            seq: self.next_seq,
            index,
            lba,
            data: buf,
            out,
        };
        self.next_seq += 1;
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        if !sent {
            return Err(self.failure("compression workers stopped".into()));
        }
        self.in_flight += 1;
        Ok(())
    }

    fn receive_one(
        &mut self,
        emit: &mut dyn FnMut(&Done) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        let done = self
            .results
            .recv()
            .map_err(|_| "compression workers stopped".to_owned())
            .and_then(|r| r)
            .map_err(|reason| self.failure(reason))?;
        self.in_flight -= 1;
        self.pending.insert(done.seq, done);
        while let Some(done) = self.pending.remove(&self.next_out) {
            emit(&done)?;
            self.next_out += 1;
            self.spare.push((done.data, done.record));
        }
        Ok(())
    }

    /// Waits for every queued grain and emits the rest; stops the workers.
    pub fn finish(
        mut self,
        emit: &mut dyn FnMut(&Done) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        while self.in_flight > 0 {
            self.receive_one(emit)?;
        }
        self.jobs = None;
        for w in std::mem::take(&mut self.workers) {
            w.join()
                .map_err(|_| self.failure("a compression worker panicked".into()))?;
        }
        Ok(())
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // Closing the job channel ends the workers; they are detached if still busy.
        self.jobs = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::vmdk::codec::inflate_grain;
    use crate::formats::vmdk::marker::Marker;

    #[test]
    fn records_come_back_in_order_and_inflate() {
        let mut p = Pipeline::new(Path::new("test.vmdk"), 3);
        let mut seen = Vec::new();
        let mut emit = |d: &Done| -> Result<(), FormatError> {
            let head: [u8; 16] = d.record[..16].try_into().unwrap();
            let Marker::Grain { lba, size } = Marker::parse(&head) else {
                panic!("not a grain")
            };
            assert_eq!(d.record.len() % 512, 0);
            let mut out = vec![0u8; 4096];
            inflate_grain(
                &mut flate2::Decompress::new(true),
                &d.record[12..12 + size as usize],
                &mut out,
            )
            .unwrap();
            assert!(out.iter().all(|&b| b == d.index as u8));
            seen.push((d.index, lba));
            Ok(())
        };
        for i in 0..40u64 {
            p.push(i, i * 8, &[i as u8; 4096], &mut emit).unwrap();
        }
        p.finish(&mut emit).unwrap();
        assert_eq!(seen, (0..40).map(|i| (i, i * 8)).collect::<Vec<_>>());
    }
}
