//! The `InferencePool`: the supervisor of the workers, shared by every handle
//! and every worker. It keeps one pending batch per served model; workers
//! wait on it (a condition variable, no actor mailbox in between) and an
//! idle one takes a request the moment it arrives. While every worker is
//! busy, requests pile up and the next free worker takes them as one batch
//! (up to `max_batch` rows), so an idle pool answers a single request at
//! once (no batching timer) and a busy one batches on its own: single-row
//! requests from many session actors share one forward pass. It refuses
//! work beyond `max_queued_rows` instead of queueing without bound, and
//! swaps models between batches without failing any request.

use super::messages::{Job, PredictReply, RunBatch};
use super::serving::{ServingModel, ServingSet};
use super::shadow::ShadowScorer;
use super::telemetry::{InferenceEvent, InferenceMetrics};
use super::{InferenceError, PoolSettings};
use ::actors::features::ShoppersFeatures;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, RwLock};
use std::time::Instant;

pub struct InferencePool {
    settings: PoolSettings,
    state: Mutex<State>,
    /// Signalled when work arrives (and on stop).
    work: Condvar,
    /// Rows queued or being scored.
    queued: AtomicUsize,
    pub(super) metrics: InferenceMetrics,
    /// True while a model is served.
    ready: AtomicBool,
    /// The served versions and shares.
    serving: RwLock<Vec<(String, f64)>>,
    stopped: AtomicBool,
    /// Scores served batches with the shadow version, off the workers.
    pub(super) shadow: ShadowScorer,
    /// The shadow version's name, for `shadow()`.
    shadow_version: RwLock<Option<String>>,
}

struct State {
    set: ServingSet,
    /// One pending batch per model of `set` (same index).
    pending: Vec<Pending>,
    /// Requests picked for a set that was since replaced: scored with the
    /// model they were picked for, before anything else.
    draining: Vec<Pending>,
    /// The shadow version: every batch taken carries it.
    shadow: Option<ServingModel>,
    /// Workers waiting for work.
    idle: usize,
    stopped: bool,
}

struct Pending {
    model: ServingModel,
    jobs: Vec<Job>,
    rows: usize,
}

impl State {
    /// The next batch: what was left by a model swap first, then the pending
    /// batch whose oldest request has waited longest; at most `max_batch`
    /// rows unless a single request is larger.
    fn next_batch(&mut self, max_batch: usize) -> Option<RunBatch> {
        let p = match self.draining.iter().position(|p| !p.jobs.is_empty()) {
            Some(i) => &mut self.draining[i],
            None => self.pending.iter_mut().filter(|p| !p.jobs.is_empty()).min_by_key(|p| p.jobs[0].pooled)?,
        };
        let (mut take, mut rows) = (0, 0);
        for job in &p.jobs {
            let n = job.rows.len();
            if take > 0 && rows + n > max_batch {
                break;
            }
            take += 1;
            rows += n;
        }
        let jobs: Vec<Job> =
            if take == p.jobs.len() { std::mem::take(&mut p.jobs) } else { p.jobs.drain(..take).collect() };
        p.rows -= rows;
        let model = p.model.clone();
        self.draining.retain(|p| !p.jobs.is_empty());
        Some(RunBatch { model, jobs, rows, dispatched: Instant::now(), shadow: self.shadow.clone() })
    }
}

impl InferencePool {
    pub fn new(settings: PoolSettings, metrics: InferenceMetrics) -> Self {
        let shadow = ShadowScorer::new(settings.max_queued_rows, metrics.clone());
        InferencePool {
            settings,
            state: Mutex::new(State {
                set: ServingSet::default(),
                pending: Vec::new(),
                draining: Vec::new(),
                shadow: None,
                idle: 0,
                stopped: false,
            }),
            work: Condvar::new(),
            queued: AtomicUsize::new(0),
            shadow,
            shadow_version: RwLock::new(None),
            metrics,
            ready: AtomicBool::new(false),
            serving: RwLock::new(Vec::new()),
            stopped: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic never happens while the lock is held (no model code runs
        // under it), but a poisoned lock must not stop the service.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a request in: refused (no model, overloaded, stopped) through
    /// `reply`, or queued and, if a worker is idle, woken to take it now.
    pub fn submit(&self, key: Option<&str>, rows: Vec<ShoppersFeatures>, reply: PredictReply, enqueued: Instant) {
        if self.stopped.load(Ordering::Relaxed) {
            let _ = reply.send(Err(InferenceError::Stopped));
            return;
        }
        let n = rows.len();
        {
            let mut st = self.lock();
            let Some(i) = st.set.pick(key) else {
                drop(st);
                self.metrics.record(InferenceEvent::Refused { reason: "no_model" });
                let _ = reply.send(Err(InferenceError::NoModel));
                return;
            };
            let queued = self.queued.load(Ordering::Relaxed);
            if queued + n > self.settings.max_queued_rows && queued > 0 {
                drop(st);
                self.metrics.record(InferenceEvent::Refused { reason: "overloaded" });
                let _ = reply.send(Err(InferenceError::Overloaded(queued)));
                return;
            }
            self.queued.fetch_add(n, Ordering::Relaxed);
            let p = &mut st.pending[i];
            p.jobs.push(Job { rows, reply, enqueued, pooled: Instant::now() });
            p.rows += n;
            if st.idle == 0 {
                return;
            }
        }
        self.work.notify_one();
    }

    /// A worker's next batch: waits until there is one; `None` once the pool
    /// is stopped and nothing is left to score.
    pub(super) fn next_batch(&self) -> Option<RunBatch> {
        let mut st = self.lock();
        loop {
            if let Some(b) = st.next_batch(self.settings.max_batch) {
                return Some(b);
            }
            if st.stopped {
                return None;
            }
            st.idle += 1;
            st = self.work.wait(st).unwrap_or_else(|e| e.into_inner());
            st.idle -= 1;
        }
    }

    /// A worker is done with a batch of `rows` (scored or failed).
    pub(super) fn finished(&self, rows: usize) {
        self.queued.fetch_sub(rows, Ordering::Relaxed);
    }

    /// Serves `set` from the next batch on; what is pending was picked for
    /// the old set and is scored with it.
    pub fn set_models(&self, set: ServingSet) {
        let described = set.describe();
        {
            let mut st = self.lock();
            let old = std::mem::take(&mut st.pending);
            st.draining.extend(old.into_iter().filter(|p| !p.jobs.is_empty()));
            st.pending = set.models().iter().map(|m| Pending { model: m.clone(), jobs: Vec::new(), rows: 0 }).collect();
            st.set = set;
            self.ready.store(!st.set.is_empty(), Ordering::Relaxed);
            if let Ok(mut s) = self.serving.write() {
                *s = described.clone();
            }
        }
        self.metrics.record(InferenceEvent::ModelsChanged { versions: &described });
    }

    /// Scores every batch taken from now on with `shadow` too (after its
    /// replies are sent); `None` ends it.
    pub fn set_shadow(&self, shadow: Option<ServingModel>) {
        let version = shadow.as_ref().map(|m| m.version.to_string());
        self.lock().shadow = shadow;
        if let Ok(mut v) = self.shadow_version.write() {
            *v = version.clone();
        }
        self.metrics.record(InferenceEvent::ShadowChanged { version: version.as_deref() });
    }

    /// The shadow version scored alongside, if any.
    pub fn shadow(&self) -> Option<String> {
        self.shadow_version.read().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn serving(&self) -> Vec<(String, f64)> {
        self.serving.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// The decision threshold of `version`, if it is served now.
    pub fn threshold_of(&self, version: &str) -> Option<f32> {
        let st = self.lock();
        st.set.models().iter().find(|m| &*m.version == version).map(|m| m.model.manifest.threshold)
    }

    /// The model of `version`, if it is served now.
    pub fn model_of(&self, version: &str) -> Option<std::sync::Arc<crate::models::artifact::PurchaseModel>> {
        let st = self.lock();
        st.set.models().iter().find(|m| &*m.version == version).map(|m| m.model.clone())
    }

    /// Refuses new requests; queued ones are still scored, then the
    /// workers return to their `SyncArbiter` (and end with the system).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.lock().stopped = true;
        self.work.notify_all();
        self.shadow.stop();
    }
}

#[cfg(test)]
mod tests {
    use crate::jobs::train::{ModelConfig, TrainOptions};
    use crate::models::artifact::PurchaseModel;
    use crate::models::net::NetConfig;
    use crate::serving::inference::telemetry::InferenceMetrics;
    use crate::serving::inference::{InferenceError, InferenceHandle, PoolSettings, ServingModel, ServingSet};
    use actors::features::ShoppersFeatures;
    use std::sync::Arc;
    use std::time::Duration;

    fn tiny_model(dir: &std::path::Path, seed: u64) -> (PurchaseModel, Vec<ShoppersFeatures>) {
        let data = dir.join(format!("shoppers{seed}.csv"));
        std::fs::write(&data, crate::jobs::train::synthetic_shoppers_csv(300, seed)).unwrap();
        let out = dir.join(format!("model{seed}"));
        crate::jobs::train::run(TrainOptions {
            data: data.clone().into(),
            folds: 2,
            seed,
            out: out.clone(),
            report: None,
            config: ModelConfig {
                members: 2,
                net: NetConfig { hidden: vec![8], max_epochs: 3, ..NetConfig::default() },
                ..ModelConfig::default()
            },
            progress: false,
        })
        .unwrap();
        (PurchaseModel::load(&out).unwrap(), crate::jobs::train::load_csv(&data, true).unwrap().features)
    }

    fn settings(max_queued_rows: usize) -> PoolSettings {
        PoolSettings { workers: 1, max_batch: 64, max_queued_rows }
    }

    #[actix_web::test]
    async fn busy_workers_batch_refuse_beyond_the_limit_and_swap_between_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (a, rows) = tiny_model(dir.path(), 1);
        let (b, _) = tiny_model(dir.path(), 2);
        let (va, vb) = (a.manifest.model_version.clone(), b.manifest.model_version.clone());
        let want_a = a.predict(&rows).unwrap();
        let want_b = b.predict(&rows).unwrap();
        let pool = InferenceHandle::start(settings(50_100), InferenceMetrics::detached());
        let none = pool.submit(None, rows[..1].to_vec()).unwrap().await.unwrap();
        assert!(matches!(none, Err(InferenceError::NoModel)), "{none:?}");
        pool.set_models(ServingSet::single(a));

        // A big request keeps the one worker busy; single rows queue behind it.
        let big: Vec<ShoppersFeatures> = rows.iter().cycle().take(50_000).cloned().collect();
        let big = pool.submit(None, big).unwrap();
        let small: Vec<_> = (0..40).map(|i| pool.submit(Some("c"), vec![rows[i].clone()]).unwrap()).collect();
        // Beyond max_queued_rows: refused at once.
        let refused = pool.submit(None, rows[..300].to_vec()).unwrap().await.unwrap();
        assert!(matches!(refused, Err(InferenceError::Overloaded(_))), "{refused:?}");
        // Swapped while those wait: they still get the model they were picked for.
        pool.set_models(ServingSet::single(b));
        let after: Vec<_> = (0..40).map(|i| pool.submit(Some("c"), vec![rows[i].clone()]).unwrap()).collect();

        assert_eq!(big.await.unwrap().unwrap().probabilities.len(), 50_000);
        let mut batched = 0;
        for (i, rx) in small.into_iter().enumerate() {
            let p = rx.await.unwrap().unwrap();
            assert_eq!(&*p.model_version, va.as_str());
            assert!((p.probabilities[0] - want_a[i]).abs() < 1e-6);
            batched += usize::from(p.stages.batch_rows > 1);
        }
        assert!(batched >= 30, "requests queued behind a busy worker share batches ({batched}/40)");
        for (i, rx) in after.into_iter().enumerate() {
            let p = rx.await.unwrap().unwrap();
            assert_eq!(&*p.model_version, vb.as_str());
            assert!((p.probabilities[0] - want_b[i]).abs() < 1e-6);
        }
        // Idle again: a lone request is scored alone, at once.
        let p = pool.predict(None, vec![rows[0].clone()]).await.unwrap();
        assert_eq!(p.stages.batch_rows, 1);
        // A panicking batch fails its requests; its (only) worker is replaced.
        pool.inject_worker_fault();
        let failed = pool.predict(None, vec![rows[0].clone()]).await;
        assert!(matches!(failed, Err(InferenceError::Worker(_))), "{failed:?}");
        for i in 0..5 {
            let p = pool.predict(None, vec![rows[i].clone()]).await.unwrap();
            assert!((p.probabilities[0] - want_b[i]).abs() < 1e-6);
        }
    }
    /// Waits (up to 10 s) until `f` holds.
    async fn eventually(what: &str, f: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[actix_web::test]
    async fn the_shadow_scores_served_rows_after_answering_and_its_panics_are_contained() {
        let dir = tempfile::tempdir().unwrap();
        let (a, rows) = tiny_model(dir.path(), 1);
        let (b, _) = tiny_model(dir.path(), 2);
        let (va, vb) = (a.manifest.model_version.clone(), b.manifest.model_version.clone());
        assert_ne!(va, vb);
        let want_a = a.predict(&rows[..40]).unwrap();
        let pool = InferenceHandle::start(settings(10_000), InferenceMetrics::detached());
        pool.set_models(ServingSet::single(a));
        let shadow = ServingModel { version: vb.as_str().into(), traffic_share: 0.0, model: Arc::new(b) };
        pool.set_shadow(Some(shadow));
        assert_eq!(pool.shadow().as_deref(), Some(vb.as_str()));
        let m = pool.metrics().clone();

        // Answers are the served model's; the shadow counts the same rows.
        for i in 0..20 {
            let p = pool.predict(Some("c"), vec![rows[i].clone()]).await.unwrap();
            assert_eq!(&*p.model_version, va.as_str());
            assert!((p.probabilities[0] - want_a[i]).abs() < 1e-6);
        }
        let p = pool.predict(None, rows[20..40].to_vec()).await.unwrap();
        assert_eq!(&*p.model_version, va.as_str());
        eventually("40 shadow rows", || m.shadow_rows(&vb) == 40).await;
        assert_eq!(m.shadow_rows(&va), 0);

        // A panic in shadow scoring is caught and counted; serving goes on,
        // and so does the shadow.
        pool.inject_shadow_fault();
        let p = pool.predict(None, rows[..5].to_vec()).await.unwrap();
        assert_eq!(&*p.model_version, va.as_str());
        eventually("a shadow failure", || m.shadow_failures(&vb) == 1).await;
        assert_eq!(m.shadow_rows(&vb), 40, "the failed batch is not counted as scored");
        pool.predict(None, rows[..3].to_vec()).await.unwrap();
        eventually("43 shadow rows", || m.shadow_rows(&vb) == 43).await;

        // Cleared: nothing more is shadow-scored.
        pool.set_shadow(None);
        assert_eq!(pool.shadow(), None);
        pool.predict(None, rows[..10].to_vec()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(m.shadow_rows(&vb), 43);
    }
}
