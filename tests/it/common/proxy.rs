//! An MQTT 3.1.1 proxy between the gateway and a real broker, to lose
//! acknowledgements on purpose: it can drop chosen PUBACKs going to the
//! gateway (by their number, counted from 1 over the proxy's life, or all
//! of them while `swallow` is set) and cut the connection right after a
//! chosen PUBLISH from the gateway (the broker gets that PUBLISH, the
//! gateway never sees its PUBACK). It records every QoS 1 PUBLISH the
//! gateway sent, so a test can check what was sent again. With `hang` set
//! it stands for a hung broker: the connections stay open and nothing
//! passes in either direction.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A QoS 1 PUBLISH the gateway sent through the proxy.
#[derive(Debug, Clone)]
pub struct Sent {
    /// 1-based, over the proxy's life.
    pub n: u64,
    /// Which connection (1-based) carried it.
    pub conn: u64,
    pub pkid: u16,
    pub topic: String,
    pub body: Value,
}

#[derive(Default)]
pub struct ProxyState {
    /// Numbers of the PUBACKs (to the gateway) of data messages
    /// (telemetry, event) to drop: status and inventory messages are not
    /// counted (how many of them come, and when, depends on timing).
    pub drop_pubacks: Mutex<BTreeSet<u64>>,
    /// Numbers of the data PUBLISHes (from the gateway; telemetry, event)
    /// after which to cut.
    pub cut_after: Mutex<BTreeSet<u64>>,
    /// Drop every PUBACK while set.
    pub swallow: AtomicBool,
    /// While set, every packet in either direction is dropped (read and
    /// not passed on), connections stay open: a hung broker.
    pub hang: AtomicBool,
    /// Packets dropped because of `hang`, both directions.
    pub hung: AtomicU64,
    /// PUBACKs dropped so far.
    pub swallowed: AtomicU64,
    pub pubacks: AtomicU64,
    pub publishes: AtomicU64,
    /// Data messages only (what `drop_pubacks` and `cut_after` count).
    pub data_pubacks: AtomicU64,
    pub data_publishes: AtomicU64,
    pub connections: AtomicU64,
    /// Every QoS 1 PUBLISH from the gateway, in order.
    pub sent: Mutex<Vec<Sent>>,
    /// The PUBLISHes whose PUBACK was dropped.
    pub unacked: Mutex<Vec<Sent>>,
    /// The PUBLISHes right after which the connection was cut.
    pub cut: Mutex<Vec<Sent>>,
}

pub struct MqttProxy {
    /// The port the proxy listens on (bound as port 0).
    pub port: u16,
    pub state: Arc<ProxyState>,
    cancel: CancellationToken,
}

impl MqttProxy {
    pub async fn start(upstream: u16) -> MqttProxy {
        Self::start_with(upstream, ProxyState::default()).await
    }

    pub async fn start_with(upstream: u16, state: ProxyState) -> MqttProxy {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = l.local_addr().expect("proxy address").port();
        let state = Arc::new(state);
        let cancel = CancellationToken::new();
        let (st, c) = (state.clone(), cancel.clone());
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    _ = c.cancelled() => return,
                    r = l.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                };
                let Ok(broker) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let conn = st.connections.fetch_add(1, Ordering::Relaxed) + 1;
                tokio::spawn(connection(
                    client,
                    broker,
                    conn,
                    st.clone(),
                    c.child_token(),
                ));
            }
        });
        MqttProxy {
            port,
            state,
            cancel,
        }
    }
}

impl Drop for MqttProxy {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// One MQTT packet: (first header byte, whole packet bytes, body offset).
/// A data message (telemetry or event), as opposed to the gateway's
/// status, inventory and command replies.
fn is_data(topic: &str) -> bool {
    topic.ends_with("/telemetry") || topic.ends_with("/event")
}

async fn read_packet(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<(u8, Vec<u8>, usize)> {
    let first = r.read_u8().await?;
    let mut bytes = vec![first];
    let mut len = 0usize;
    for shift in 0..4 {
        let b = r.read_u8().await?;
        bytes.push(b);
        len |= usize::from(b & 0x7f) << (7 * shift);
        if b & 0x80 == 0 {
            break;
        }
    }
    let at = bytes.len();
    bytes.resize(at + len, 0);
    r.read_exact(&mut bytes[at..]).await?;
    Ok((first, bytes, at))
}

async fn connection(
    client: TcpStream,
    broker: TcpStream,
    conn: u64,
    st: Arc<ProxyState>,
    cancel: CancellationToken,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut br, mut bw) = broker.into_split();
    // Publishes in flight on this connection, by packet id.
    let inflight: Arc<Mutex<HashMap<u16, Sent>>> = Arc::default();
    // Set (to the packet id + 1) before a cut PUBLISH goes to the broker:
    // from then on nothing from the broker reaches the gateway, and the
    // connection ends when the broker acknowledges that PUBLISH. Ending it
    // at once could lose the PUBLISH on the way to the broker (a socket
    // closed with unread data sends a reset, and the broker's side may drop
    // what it had not read yet), and the test wants "the broker got it, the
    // gateway never heard".
    let cutting = Arc::new(AtomicU32::new(0));
    let up = {
        let (st, inflight, cutting) = (st.clone(), inflight.clone(), cutting.clone());
        async move {
            loop {
                let (first, bytes, at) = read_packet(&mut cr).await?;
                let mut cut = false;
                if first >> 4 == 3 && (first >> 1) & 3 > 0 {
                    let body = &bytes[at..];
                    let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
                    let topic = String::from_utf8_lossy(&body[2..2 + tlen]).into_owned();
                    let pkid = u16::from_be_bytes([body[2 + tlen], body[3 + tlen]]);
                    let n = st.publishes.fetch_add(1, Ordering::Relaxed) + 1;
                    let sent = Sent {
                        n,
                        conn,
                        pkid,
                        topic,
                        body: serde_json::from_slice(&body[4 + tlen..]).unwrap_or(Value::Null),
                    };
                    st.sent.lock().unwrap().push(sent.clone());
                    let data = is_data(&sent.topic);
                    let dn = if data {
                        st.data_publishes.fetch_add(1, Ordering::Relaxed) + 1
                    } else {
                        0
                    };
                    if data && st.cut_after.lock().unwrap().contains(&dn) {
                        cut = true;
                        cutting.store(u32::from(pkid) + 1, Ordering::SeqCst);
                        st.cut.lock().unwrap().push(sent.clone());
                    }
                    inflight.lock().unwrap().insert(pkid, sent);
                }
                if st.hang.load(Ordering::SeqCst) {
                    st.hung.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                bw.write_all(&bytes).await?;
                if cut {
                    bw.flush().await?;
                    // The broker's PUBACK ends the connection (below); a
                    // broker that never sends it ends it after a while.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    return Ok::<(), std::io::Error>(());
                }
            }
        }
    };
    let down = {
        let (st, inflight, cutting) = (st.clone(), inflight.clone(), cutting.clone());
        async move {
            loop {
                let (first, bytes, at) = read_packet(&mut br).await?;
                let cut = cutting.load(Ordering::SeqCst);
                if cut != 0 {
                    if first >> 4 == 4
                        && u32::from(u16::from_be_bytes([bytes[at], bytes[at + 1]])) + 1 == cut
                    {
                        return Ok::<(), std::io::Error>(());
                    }
                    continue;
                }
                if st.hang.load(Ordering::SeqCst) {
                    st.hung.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if first >> 4 == 4 {
                    st.pubacks.fetch_add(1, Ordering::Relaxed);
                    let pkid = u16::from_be_bytes([bytes[at], bytes[at + 1]]);
                    let sent = inflight.lock().unwrap().remove(&pkid);
                    let data = sent.as_ref().is_some_and(|s| is_data(&s.topic));
                    let dn = if data {
                        st.data_pubacks.fetch_add(1, Ordering::Relaxed) + 1
                    } else {
                        0
                    };
                    if st.swallow.load(Ordering::Relaxed)
                        || (data && st.drop_pubacks.lock().unwrap().contains(&dn))
                    {
                        st.swallowed.fetch_add(1, Ordering::Relaxed);
                        if let Some(s) = sent {
                            st.unacked.lock().unwrap().push(s);
                        }
                        continue;
                    }
                }
                cw.write_all(&bytes).await?;
            }
        }
    };
    // Either direction ending (an error, a cut, the proxy stopping) ends
    // both: the sockets are dropped and the gateway sees the link go.
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = up => {}
        _ = down => {}
    }
}
