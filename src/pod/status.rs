//! What a Pod's STATUS reports (docs/protocol.md, "Control requests"): its
//! head's and tail's counters, which Peas have connected, and each Pea's own
//! STATUS, read as the typed [`PeaStatus`] it is.

use serde::{Deserialize, Serialize};

use super::update::Component;
use crate::pea::PeaStatus;

/// A Pod's answer to `STATUS`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodStatus {
    /// The Pod's name (as `pea` too, so a client reads either kind alike).
    pub pea: String,
    pub pod: String,
    pub description: String,
    /// Always `ready`: a Pod that stops no longer answers.
    pub state: String,
    /// Every Pea answered healthy, and enough of them are connected.
    pub healthy: bool,
    /// Requests the head took.
    pub requests: u64,
    /// Messages the head dropped (not a request of this protocol).
    pub dropped: u64,
    /// Requests the tail ended as failed (a part missing past its deadline).
    pub failed: u64,
    pub pending: u64,
    pub completed: u64,
    pub timed_out: u64,
    pub late_parts: u64,
    pub uptime_ms: u64,
    /// Restarts of the Peas' processes, all together.
    pub process_restarts: u64,
    pub peas: Vec<MemberStatus>,
    /// The Peas connected to the head.
    pub connected: Vec<String>,
    /// How many must be connected for the Pod to be healthy.
    pub expected: usize,
    /// The component the Pod serves.
    pub component: Component,
}

/// One Pea of a Pod: where it sits, and its STATUS or why there is none.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStatus {
    pub role: String,
    pub ctrl: String,
    pub process_restarts: u64,
    #[serde(flatten)]
    pub answer: MemberAnswer,
}

/// A Pea's answer to the Pod's STATUS, or why it gave none.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MemberAnswer {
    Status(Box<PeaStatus>),
    /// Its process is down, it did not answer within the wait, or its answer
    /// was not a Pea's STATUS.
    Missing {
        pea: String,
        healthy: bool,
        error: String,
    },
}

impl MemberStatus {
    pub fn healthy(&self) -> bool {
        match &self.answer {
            MemberAnswer::Status(status) => status.healthy,
            MemberAnswer::Missing { .. } => false,
        }
    }
}
