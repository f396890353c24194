//! Message bodies over NATS whatever their size.
//!
//! A core NATS message is capped by the server (`max_payload`, 1 MiB by default). A
//! classification upload (100 grey 14×14 frames) and every model blob fit; a detection upload
//! (100 RGB 64×64 frames, ~1.2 MB raw and about four times that as JSON) does not. A body over
//! the cap goes into the run's JetStream object store (bucket `adaevo_<run>`) and the message
//! carries only its name and size in headers; the receiver reads the object, checks its size
//! (the object store checks its SHA-256 digest on read) and handles the body as if it had come
//! inline. The receiver of an upload deletes its object once it has answered; the sender
//! deletes it only when the request could not be sent (after a timeout the receiver may still
//! read it late). A model blob's object lives until its
//! delivery ends. The edge removes the bucket when its run is over, so what a killed process
//! or a timed-out upload left behind goes with it. Object names carry a per-process suffix, so
//! that a restarted process's bodies never overwrite ones still being read.

use super::NetError;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, object_store, stream::StorageType};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// `base` made unique to this process and moment (see the module notes).
pub fn object_name(base: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("{base}-{:x}-{nanos:x}", std::process::id())
}

/// Header naming the object that holds the body.
const OBJECT: &str = "Ferrolab-Object";
/// Header with the body's size in bytes.
const SIZE: &str = "Ferrolab-Size";
/// Room left under the server's cap for the subject, reply inbox and headers.
const HEADROOM: usize = 16 << 10;
/// Object store chunk size (each chunk is one JetStream message under the cap).
const CHUNK: usize = 256 << 10;

/// Sends and receives bodies of any size on one connection.
#[derive(Clone)]
pub struct Carrier {
    client: async_nats::Client,
    js: jetstream::Context,
    bucket: String,
    store: std::sync::Arc<tokio::sync::OnceCell<object_store::ObjectStore>>,
    /// Bodies above this many bytes go through the object store.
    pub inline_limit: usize,
    timeout: Duration,
}

/// A body ready to send: headers (empty when inline) and the message payload.
pub struct Packed {
    pub headers: HeaderMap,
    pub payload: Vec<u8>,
    /// The object holding the body, when it did not go inline.
    pub object: Option<String>,
}

impl Packed {
    /// A body sent as the message itself (a short notice).
    pub fn inline(payload: Vec<u8>) -> Packed {
        Packed {
            headers: HeaderMap::new(),
            payload,
            object: None,
        }
    }
}

impl Carrier {
    /// A carrier for run `prefix`: bodies above `limit` bytes (default: the server's cap less
    /// some room for headers) go through the object store.
    pub fn new(
        client: &async_nats::Client,
        prefix: &str,
        limit: Option<usize>,
        timeout: Duration,
    ) -> Carrier {
        let cap = client.server_info().max_payload;
        let auto = cap.saturating_sub(HEADROOM).max(1);
        Carrier {
            client: client.clone(),
            js: jetstream::new(client.clone()),
            bucket: format!("adaevo_{prefix}"),
            store: Default::default(),
            inline_limit: limit.unwrap_or(auto).min(auto),
            timeout,
        }
    }

    /// Time allowed for moving `n` bytes through the object store: the request timeout plus
    /// 10 s per 128 MiB.
    fn limit_for(&self, n: usize) -> Duration {
        self.timeout + Duration::from_secs(10 + (n >> 27) as u64 * 10)
    }

    async fn store(&self) -> Result<&object_store::ObjectStore, String> {
        self.store
            .get_or_try_init(|| async {
                let open =
                    tokio::time::timeout(self.timeout, self.js.get_object_store(&self.bucket));
                if let Ok(Ok(s)) = open.await {
                    return Ok(s);
                }
                // Bodies are transient (deleted once answered): memory storage is enough,
                // and a server restart loses only bodies their senders will send again.
                let cfg = object_store::Config {
                    bucket: self.bucket.clone(),
                    storage: StorageType::Memory,
                    ..Default::default()
                };
                match tokio::time::timeout(self.timeout, self.js.create_object_store(cfg)).await {
                    Ok(Ok(s)) => Ok(s),
                    Ok(Err(e)) => Err(format!(
                        "object store {}: {e} (large bodies need JetStream: nats-server -js)",
                        self.bucket
                    )),
                    Err(_) => Err(format!(
                        "object store {}: no answer within {:?}",
                        self.bucket, self.timeout
                    )),
                }
            })
            .await
    }

    /// Opens (or creates) the run's bucket now: for a task whose bodies exceed the server's
    /// cap, so that a server without JetStream is found at start, not at the first upload.
    pub async fn ready(&self) -> Result<(), String> {
        self.store().await.map(|_| ())
    }

    /// `body` as a message: inline when it fits, otherwise stored as object `name`.
    pub async fn pack(&self, name: &str, body: Vec<u8>) -> Result<Packed, NetError> {
        if body.len() <= self.inline_limit {
            return Ok(Packed::inline(body));
        }
        let store = self.store().await.map_err(NetError::Runtime)?;
        let meta = object_store::ObjectMetadata {
            name: name.to_string(),
            chunk_size: Some(CHUNK),
            ..Default::default()
        };
        let mut reader = body.as_slice();
        match tokio::time::timeout(self.limit_for(body.len()), store.put(meta, &mut reader)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(NetError::Runtime(format!(
                    "store {}/{name} ({} bytes): {e}",
                    self.bucket,
                    body.len()
                )));
            }
            Err(_) => {
                return Err(NetError::Runtime(format!(
                    "store {}/{name} ({} bytes): timed out",
                    self.bucket,
                    body.len()
                )));
            }
        }
        let mut headers = HeaderMap::new();
        headers.insert(OBJECT, name);
        headers.insert(SIZE, body.len().to_string());
        Ok(Packed {
            headers,
            payload: Vec::new(),
            object: Some(name.to_string()),
        })
    }

    /// The body of `msg`: its payload, or the object its headers name, with that object's
    /// name (`Err`: the reason the body cannot be had, for the sender's answer).
    pub async fn unpack(
        &self,
        msg: &async_nats::Message,
    ) -> Result<(Vec<u8>, Option<String>), String> {
        let Some(name) = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(OBJECT))
            .map(|v| v.as_str().to_string())
        else {
            return Ok((msg.payload.to_vec(), None));
        };
        let size: usize = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(SIZE))
            .and_then(|v| v.as_str().parse().ok())
            .ok_or_else(|| format!("object {name}: no valid {SIZE} header"))?;
        let store = self.store().await?;
        let read = async {
            let mut obj = store
                .get(&name)
                .await
                .map_err(|e| format!("object {name}: {e}"))?;
            if obj.info().size != size {
                return Err(format!(
                    "object {name} has {} bytes, the message announced {size}",
                    obj.info().size
                ));
            }
            let mut buf = Vec::with_capacity(size);
            obj.read_to_end(&mut buf)
                .await
                .map_err(|e| format!("object {name}: {e}"))?;
            Ok(buf)
        };
        match tokio::time::timeout(self.limit_for(size), read).await {
            Ok(r) => r.map(|b| (b, Some(name))),
            Err(_) => Err(format!("object {name}: not read within the time allowed")),
        }
    }

    /// Sends `p` to `subject` as a request and waits up to `per_try` for the answer.
    pub async fn request(
        &self,
        subject: String,
        p: &Packed,
        per_try: Duration,
    ) -> Result<async_nats::Message, RequestFailure> {
        let send =
            self.client
                .request_with_headers(subject, p.headers.clone(), p.payload.clone().into());
        match tokio::time::timeout(per_try, send).await {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::TimedOut => {
                Err(RequestFailure::TimedOut(e.to_string()))
            }
            Ok(Err(e)) => Err(RequestFailure::Failed(e.to_string())),
            Err(_) => Err(RequestFailure::TimedOut(format!(
                "no answer within {per_try:?}"
            ))),
        }
    }

    /// Deletes object `name` (best effort: one already gone is what we want).
    pub async fn delete(&self, name: &str) {
        if let Ok(store) = self.store().await {
            let _ = tokio::time::timeout(self.timeout, store.delete(name)).await;
        }
    }

    /// Removes the run's bucket (the edge, once its run is over); best effort: a run whose
    /// bodies all went inline has none, and a server without JetStream answers at once.
    pub async fn remove_bucket(&self) {
        let _ = tokio::time::timeout(self.timeout, self.js.delete_object_store(&self.bucket)).await;
    }
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum RequestFailure {
    /// None came in time: the receiver may still have acted on it.
    TimedOut(String),
    /// The request could not be sent (no responders, connection closed).
    Failed(String),
}
