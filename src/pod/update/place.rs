//! Putting one new Pea in place: a replica joins before the old one leaves; a
//! shard is held, drained, dumped, stopped and restarted on its workspace.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;

impl ReplicaSet {
    /// A replica: the new one joins, then the old one leaves.
    pub(super) async fn replace_replica(
        &mut self,
        place: usize,
        config: &PodConfig,
        drain: Duration,
        stop: &CancellationToken,
    ) -> Result<usize, Failure> {
        let old = self.active[place];
        let pea = super::super::member_config(
            config,
            self.layout,
            place,
            &self.fanout_at,
            &self.parts_at,
        )
        .map_err(|e| Failure::Unchanged(format!("{e:#}")))?;
        let name = pea.name.clone();
        let spot = super::super::place_of(config, self.layout, place);
        let (role, shard) = (spot.role(), spot.shard());
        let index = self
            .command(|reply| HeadCommand::Add {
                name: name.clone(),
                shard,
                reply,
            })
            .await
            .map_err(Failure::Unchanged)?;
        if let Err(e) = self.start(index, config, pea, role, stop).await {
            self.retire(index).await;
            return Err(Failure::Unchanged(format!("replacing {name}: {e}")));
        }
        // The old one: no new work, then whatever it holds, then stop.
        self.retire(old).await;
        let left = self.drain(old, Instant::now() + drain, stop).await;
        if left > 0 {
            tracing::warn!(pea = %name, "still held {left} requests after the drain timeout ({drain:?}); stopping it anyway");
        }
        self.stop_member(old).await;
        self.active[place] = index;
        Ok(left)
    }

    /// A shard: its requests held while it is swapped on its workspace.
    pub(super) async fn replace_shard(
        &mut self,
        place: usize,
        config: &PodConfig,
        drain: Duration,
        stop: &CancellationToken,
    ) -> Result<(), Failure> {
        let index = self.active[place];
        let pea = super::super::member_config(
            config,
            self.layout,
            place,
            &self.fanout_at,
            &self.parts_at,
        )
        .map_err(|e| Failure::Unchanged(format!("{e:#}")))?;
        self.command(|reply| HeadCommand::Pause { reply })
            .await
            .map_err(Failure::Unchanged)?;
        // Held for at most `drain`: then the Head takes requests again,
        // whatever state the swap is in (a shard still down fails its part).
        let deadline = Instant::now() + drain;
        let head = self.head.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            tracing::warn!(
                "a shard's requests were held for the whole drain timeout; taking requests again"
            );
            let (reply, _) = oneshot::channel();
            let _ = head.send(HeadCommand::Resume { reply }).await;
        });
        let result = self
            .swap_shard(place, index, config, pea, deadline, stop)
            .await;
        timer.abort();
        let _ = self.command(|reply| HeadCommand::Resume { reply }).await;
        result
    }

    pub(super) async fn swap_shard(
        &mut self,
        place: usize,
        index: usize,
        config: &PodConfig,
        pea: crate::pea::PeaConfig,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> Result<(), Failure> {
        let name = pea.name.clone();
        let left = self.drain(index, deadline, stop).await;
        if left > 0 {
            return Err(Failure::Unchanged(format!(
                "{name} still held {left} requests at the end of the drain timeout; it was left as it was"
            )));
        }
        // Its state on disk before it stops (the stop dumps again: a no-op
        // with nothing new).
        let ctrl = self.roster.read().expect("roster")[index].info.ctrl.clone();
        match tokio::time::timeout_at(
            deadline,
            crate::control::ask(&ctrl, crate::control::Command::Dump),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(Failure::Unchanged(format!(
                    "{name} could not dump its state ({e:#}); it was left as it was"
                )));
            }
            Err(_) => {
                return Err(Failure::Unchanged(format!(
                    "{name} did not dump its state within the drain timeout; it was left as it was"
                )));
            }
        }
        self.stop_member(index).await;
        let _ = self
            .command(|reply| HeadCommand::Reset { index, reply })
            .await;
        let role = super::super::Place::Shard {
            id: place,
            shards: 0,
        }
        .role();
        match self.start(index, config, pea, role.clone(), stop).await {
            Ok(()) => Ok(()),
            Err(reason) => {
                self.stop_member(index).await;
                let _ = self
                    .command(|reply| HeadCommand::Reset { index, reply })
                    .await;
                if stop.is_cancelled() {
                    return Err(Failure::Down(reason));
                }
                // The settings it ran with (and the copy of the file it
                // ran, pinned), on the same workspace.
                let previous = self.config.clone();
                let back = super::super::member_config(
                    &previous,
                    self.layout,
                    place,
                    &self.fanout_at,
                    &self.parts_at,
                )
                .map_err(|e| format!("{e:#}"));
                match back {
                    Ok(back) => match self.start(index, &previous, back, role, stop).await {
                        Ok(()) => Err(Failure::RolledBack(format!("replacing {name}: {reason}"))),
                        Err(e) => Err(Failure::Down(format!(
                            "replacing {name}: {reason}; restarting it with its previous settings failed too ({e}): it is DOWN"
                        ))),
                    },
                    Err(e) => Err(Failure::Down(format!(
                        "replacing {name}: {reason}; its previous settings cannot be restored ({e}): it is DOWN"
                    ))),
                }
            }
        }
    }
}
