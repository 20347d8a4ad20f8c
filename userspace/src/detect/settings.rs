//! Every detector's thresholds and hold times, with their defaults. The configuration file's
//! `[detectors.<kind>]` tables deserialize into these (unknown keys are errors).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::Kind;

/// `"10s"`, `"5m"`... as humantime reads them.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration ({e}): write 10s, 5m, 1h")))
}

/// A detector's settings struct: its own fields, plus `enabled`, `hold` and `clear`, which
/// every detector has.
macro_rules! settings {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty;)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            /// Whether the detector runs.
            pub enabled: bool,
            /// Seen this long before its finding fires.
            #[serde(deserialize_with = "duration")]
            pub hold: Duration,
            /// Not seen this long before its finding resolves.
            #[serde(deserialize_with = "duration")]
            pub clear: Duration,
            $($(#[$fdoc])* pub $field: $ty,)*
        }
    };
}

settings! {
    /// A process whose mailbox is long and growing.
    Mailbox {
        /// Fires at this many queued messages (and growing)...
        enable_length: u64;
        /// ...and stays firing until the queue is below this (hysteresis).
        disable_length: u64;
        /// The length called the limit in "time until the limit".
        limit: u64;
    }
}

settings! {
    /// A process's (or an ETS table's) memory that keeps growing.
    Memory {
        /// Only processes holding at least this many bytes.
        min_bytes: u64;
        /// Over `window`, its memory grew by at least this share (0.5: by half)...
        growth_ratio: f64;
        /// ...setting a new high at least this many times (heaps grow in steps).
        min_new_highs: u32;
        /// The span of reads the growth is measured over.
        #[serde(deserialize_with = "duration")]
        window: Duration;
    }
}

settings! {
    /// A port that is busy or whose queue fills (a socket whose peer does not read).
    PortQueue {
        /// Fires when a port's queue holds this many bytes, or its driver says busy...
        enable_bytes: u64;
        /// ...and stays firing until it is not busy and holds less than this.
        disable_bytes: u64;
    }
}

settings! {
    /// Garbage collection taking a large share of the schedulers' time.
    GcStorm {
        /// Fires when this share of scheduler samples is in the collector...
        enable_share: f64;
        /// ...and stays firing until it is below this.
        disable_share: f64;
        /// Over this long.
        #[serde(deserialize_with = "duration")]
        window: Duration;
    }
}

settings! {
    /// Normal schedulers busy all the time with processes waiting to run.
    SchedulerSaturation {
        /// Fires when the normal schedulers work this share of the time...
        enable_utilisation: f64;
        /// ...with at least this many processes waiting in the run queues on average...
        min_run_queue: f64;
        /// ...and stays firing until utilisation is below this.
        disable_utilisation: f64;
        /// Over this long.
        #[serde(deserialize_with = "duration")]
        window: Duration;
    }
}

settings! {
    /// A process running without yielding for long (OTP's `long_schedule`).
    LongSchedule {
        /// A schedule slice this long or longer.
        #[serde(deserialize_with = "duration")]
        threshold: Duration;
    }
}

settings! {
    /// A process taking most of a core.
    HotProcess {
        /// Fires at this share of one core...
        enable_share: f64;
        /// ...and stays firing until below this.
        disable_share: f64;
        /// Over this long.
        #[serde(deserialize_with = "duration")]
        window: Duration;
    }
}

settings! {
    /// Messages going round a cycle of three or more processes.
    MessageCycle {
        /// Every edge of the cycle carries at least this many messages a second (while
        /// observed).
        min_rate: f64;
        /// Over this long.
        #[serde(deserialize_with = "duration")]
        window: Duration;
        /// The longest cycle looked for.
        max_length: usize;
    }
}

settings! {
    /// Processes each blocked in a call to the next, round a cycle.
    Deadlock {
    }
}

impl Default for Mailbox {
    fn default() -> Self {
        Mailbox {
            enabled: true,
            hold: Duration::from_secs(10),
            clear: Duration::from_secs(30),
            enable_length: 10_000,
            disable_length: 1_000,
            limit: 1_000_000,
        }
    }
}

impl Default for Memory {
    fn default() -> Self {
        Memory {
            enabled: true,
            hold: Duration::from_secs(30),
            clear: Duration::from_secs(60),
            min_bytes: 50 << 20,
            growth_ratio: 0.5,
            min_new_highs: 3,
            window: Duration::from_secs(300),
        }
    }
}

impl Default for PortQueue {
    fn default() -> Self {
        PortQueue { enabled: true, hold: Duration::from_secs(30), clear: Duration::from_secs(60), enable_bytes: 1 << 20, disable_bytes: 64 << 10 }
    }
}

impl Default for GcStorm {
    fn default() -> Self {
        GcStorm {
            enabled: true,
            hold: Duration::from_secs(30),
            clear: Duration::from_secs(60),
            enable_share: 0.3,
            disable_share: 0.15,
            window: Duration::from_secs(30),
        }
    }
}

impl Default for SchedulerSaturation {
    fn default() -> Self {
        SchedulerSaturation {
            enabled: true,
            hold: Duration::from_secs(30),
            clear: Duration::from_secs(60),
            enable_utilisation: 0.9,
            min_run_queue: 1.0,
            disable_utilisation: 0.75,
            window: Duration::from_secs(30),
        }
    }
}

impl Default for LongSchedule {
    fn default() -> Self {
        LongSchedule {
            enabled: true,
            hold: Duration::ZERO,
            clear: Duration::from_secs(60),
            threshold: Duration::from_millis(100),
        }
    }
}

impl Default for HotProcess {
    fn default() -> Self {
        HotProcess {
            enabled: true,
            hold: Duration::from_secs(30),
            clear: Duration::from_secs(60),
            enable_share: 0.8,
            disable_share: 0.5,
            window: Duration::from_secs(30),
        }
    }
}

impl Default for MessageCycle {
    fn default() -> Self {
        MessageCycle {
            enabled: true,
            hold: Duration::from_secs(10),
            clear: Duration::from_secs(60),
            min_rate: 10.0,
            window: Duration::from_secs(60),
            max_length: 8,
        }
    }
}

impl Default for Deadlock {
    fn default() -> Self {
        Deadlock { enabled: true, hold: Duration::from_secs(10), clear: Duration::from_secs(10) }
    }
}

/// Every detector's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub mailbox_buildup: Mailbox,
    pub memory_growth: Memory,
    /// An ETS table whose memory keeps growing: the same test as a process's memory.
    pub ets_growth: Memory,
    pub port_queue: PortQueue,
    pub gc_storm: GcStorm,
    pub scheduler_saturation: SchedulerSaturation,
    pub long_schedule: LongSchedule,
    pub hot_process: HotProcess,
    pub message_cycle: MessageCycle,
    pub deadlock: Deadlock,
}

impl Settings {
    pub fn hold(&self, kind: Kind) -> Duration {
        self.holds(kind).0
    }

    pub fn clear(&self, kind: Kind) -> Duration {
        self.holds(kind).1
    }

    fn holds(&self, kind: Kind) -> (Duration, Duration) {
        match kind {
            Kind::MailboxBuildup => (self.mailbox_buildup.hold, self.mailbox_buildup.clear),
            Kind::MemoryGrowth => (self.memory_growth.hold, self.memory_growth.clear),
            Kind::EtsGrowth => (self.ets_growth.hold, self.ets_growth.clear),
            Kind::PortQueue => (self.port_queue.hold, self.port_queue.clear),
            Kind::GcStorm => (self.gc_storm.hold, self.gc_storm.clear),
            Kind::SchedulerSaturation => (self.scheduler_saturation.hold, self.scheduler_saturation.clear),
            Kind::LongSchedule => (self.long_schedule.hold, self.long_schedule.clear),
            Kind::HotProcess => (self.hot_process.hold, self.hot_process.clear),
            Kind::MessageCycle => (self.message_cycle.hold, self.message_cycle.clear),
            Kind::Deadlock => (self.deadlock.hold, self.deadlock.clear),
        }
    }
}
