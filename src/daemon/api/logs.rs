//! An object's log: the whole file, or followed as server-sent events.

use super::*;

/// `GET /pods/{id}/logs`: the stored log (the process's stderr: its rotated
/// part, then the current one), as text, streamed from the files: the
/// daemon never holds a whole log in memory.
pub(super) async fn logs(
    kind: Kind,
    State(d): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer<Response> {
    use futures::StreamExt as _;
    use tokio::io::AsyncReadExt as _;
    let tenant = caller(&d, &headers)?;
    let log = with_object(&d, &tenant, kind, &id, |o| o.log.clone())?;
    let parts = [crate::daemon::child::rotated(&log), log];
    let chunks = futures::stream::iter(parts)
        .filter_map(|path| async move { tokio::fs::File::open(path).await.ok() })
        .flat_map(|file| {
            futures::stream::unfold(Some(file), |file| async move {
                let mut file = file?;
                let mut buffer = vec![0u8; 64 << 10];
                match file.read(&mut buffer).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buffer.truncate(n);
                        Some((Ok::<Bytes, std::io::Error>(Bytes::from(buffer)), Some(file)))
                    }
                    Err(e) => Some((Err(e), None)),
                }
            })
        });
    let body = axum::body::Body::from_stream(chunks);
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

/// `GET /pods/{id}/logs/stream`: server-sent events, one `data:` per log line
/// from the start of the log, then live; an `end` event once the process has
/// exited or the object is deleted.
pub(super) async fn stream(
    kind: Kind,
    State(d): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>> {
    let tenant = caller(&d, &headers)?;
    let (log, live) = with_object(&d, &tenant, kind, &id, |o| (o.log.clone(), o.live.clone()))?;
    let follow = Follow {
        daemon: d,
        tenant,
        id,
        log,
        live,
        offset: 0,
        partial: Vec::new(),
        queue: VecDeque::new(),
        done: false,
    };
    let events = futures::stream::unfold(follow, |mut f| async move {
        loop {
            if let Some(event) = f.queue.pop_front() {
                return Some((Ok(event), f));
            }
            if f.done {
                return None;
            }
            // Whether it still runs is asked before reading, so every line it
            // wrote before exiting is read before the `end`.
            let alive = f.alive();
            if !f.read_more() {
                if alive {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                } else {
                    if !f.partial.is_empty() {
                        let line = std::mem::take(&mut f.partial);
                        f.queue.push_back(line_event(&line));
                    }
                    let exit = f
                        .live
                        .lock()
                        .expect("live")
                        .exit
                        .clone()
                        .unwrap_or_else(|| "deleted".into());
                    f.queue.push_back(Event::default().event("end").data(exit));
                    f.done = true;
                }
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The longest `data:` a log stream sends; a longer line goes in pieces.
pub(super) const STREAM_LINE_BYTES: usize = 64 << 10;

/// A log file being followed.
pub(super) struct Follow {
    daemon: Arc<Daemon>,
    tenant: Tenant,
    id: String,
    log: std::path::PathBuf,
    live: Arc<Mutex<Live>>,
    offset: u64,
    partial: Vec<u8>,
    queue: VecDeque<Event>,
    done: bool,
}

impl Follow {
    fn alive(&self) -> bool {
        let present = self
            .daemon
            .with_objects(&self.tenant, |objects| objects.contains_key(&self.id));
        present && self.live.lock().expect("live").state != LiveState::Exited
    }

    /// Reads what the log gained; true when it gained anything.
    fn read_more(&mut self) -> bool {
        use std::io::{Read as _, Seek as _};
        let Ok(mut file) = std::fs::File::open(&self.log) else {
            return false;
        };
        // Rotated since the last read: the new part starts from its beginning.
        if file.metadata().is_ok_and(|m| m.len() < self.offset) {
            self.offset = 0;
        }
        if file.seek(std::io::SeekFrom::Start(self.offset)).is_err() {
            return false;
        }
        let mut bytes = Vec::new();
        let Ok(n) = file.take(1 << 20).read_to_end(&mut bytes) else {
            return false;
        };
        if n == 0 {
            return false;
        }
        self.offset += n as u64;
        self.partial.extend_from_slice(&bytes);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.queue.push_back(line_event(&line[..end]));
        }
        // A log without line ends is sent in pieces, never held whole.
        while self.partial.len() >= STREAM_LINE_BYTES {
            let piece: Vec<u8> = self.partial.drain(..STREAM_LINE_BYTES).collect();
            self.queue.push_back(line_event(&piece));
        }
        true
    }
}

pub(super) fn line_event(line: &[u8]) -> Event {
    let text = String::from_utf8_lossy(line).replace('\r', "");
    Event::default().data(text)
}
