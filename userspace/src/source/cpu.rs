//! The CPU source for the monitor: the sampler's raw samples made readable on a thread of their
//! own (owner and frames, `enrich::stack`) and published to the fan-out.

use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use beam_probes::BeamTarget;

use crate::enrich::stack::StackBuilder;
use crate::enrich::symbolize::Symbolizer;
use crate::event::Sample;
use crate::pipeline::FanOut;
use crate::source::sampler::{SamplerStats, SamplerThread};

pub struct CpuSource {
    sampler: Option<SamplerThread>,
    consumer: Option<JoinHandle<()>>,
    pub stats: Arc<SamplerStats>,
    /// Where JIT code is named from, for the start-up lines.
    pub jit_source: String,
}

impl CpuSource {
    pub fn start(target: &Arc<BeamTarget>, frequency: u64, fanout: FanOut) -> Result<CpuSource> {
        // The symbolizer (blazesym) is not Send: it is made on the thread that uses it.
        let (sym_tx, sym_rx) = std::sync::mpsc::channel();
        let (sampler, rx) = SamplerThread::start(target.clone(), frequency)?;
        let stats = sampler.stats.clone();
        let target = target.clone();
        let consumer = std::thread::Builder::new().name("scope-probe-cpu".into()).spawn(move || {
            let symbolizer = match Symbolizer::new(&target) {
                Ok(s) => {
                    let _ = sym_tx.send(Ok(s.jit_source().describe()));
                    s
                }
                Err(e) => {
                    let _ = sym_tx.send(Err(e));
                    return;
                }
            };
            let mut builder = StackBuilder::new(&target, symbolizer, false);
            for s in rx {
                let stack = builder.build(&target, &s);
                fanout.sample(&Sample { vm: target.pid, ts_ns: s.ts_ns, tid: s.tid, stack });
            }
        })?;
        let jit_source = sym_rx.recv().context("the CPU sample thread ended early")??;
        Ok(CpuSource { sampler: Some(sampler), consumer: Some(consumer), stats, jit_source: jit_source.to_owned() })
    }

    /// Stops sampling; the samples still queued are published first.
    pub fn stop(mut self) -> Result<()> {
        if let Some(s) = self.sampler.take() {
            s.stop()?;
        }
        if let Some(c) = self.consumer.take() {
            let _ = c.join();
        }
        Ok(())
    }
}
