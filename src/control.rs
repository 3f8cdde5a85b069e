//! The local control channel of a running node: a Unix socket `<data_dir>/control.sock`
//! (owner-only permissions) through which the CLI asks the node for what needs its open
//! database — sled allows one process per data folder. One JSON request per connection:
//! `{"command":"backup","out":"/path/file"}` → `{"ok":true,"digest":…}` or `{"ok":false,"error":…}`.

use crate::gateway::AppState;
use crate::storage::scope::Groups;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

pub const SOCKET_NAME: &str = "control.sock";
const MAX_REQUEST: usize = 4096;

#[derive(Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Backup {
        out: PathBuf,
    },
    AnalyticsExport {
        out: PathBuf,
    },
    /// Close a day (`YYYY-MM-DD`; default: the latest day whose close time has passed).
    EndOfDay {
        date: Option<String>,
    },
    /// Reconcile the broker's confirmations with the booked orders now.
    Reconcile,
    /// The cluster as the node sees it (`moneta cluster status`).
    ClusterStatus,
    /// `moneta cluster decommission NODE_ID`.
    Decommission {
        node_id: String,
    },
    /// Test-only fault injection: cut this node's links to these members (empty: heal). Refused
    /// unless the node was started with `[cluster] test_faults = true`.
    CutLinks {
        node_ids: Vec<String>,
    },
    /// Create a staff account through the running node (so every member of its cluster has it).
    /// The socket is the owner's only; the password is hashed by the node and never logged.
    StaffAdd {
        email: String,
        role: String,
        full_name: String,
        password: String,
    },
}

#[derive(Serialize, Deserialize, Debug)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// For analytics exports: investors written, investors left out (no consent), orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<(usize, usize, usize)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A JSON document (cluster status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<String>,
}

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// Takes a consistent backup of the running node (on the journal's writer thread).
pub async fn backup(state: &AppState, out: PathBuf) -> Result<String, String> {
    let key = crate::storage::backup::load_key(&state.config.backup.key_file, true).map_err(|e| e.to_string())?;
    let keys_dir = state.config.security.secrets_path(&state.config.node.data_dir);
    // Every group this node holds a replica of is first brought to its leader's commit index
    // (a read barrier each): the backup then holds each group at one committed index, at
    // least as recent as the request.
    let journal = state.router.journal();
    let shard_groups = journal.store().groups();
    let groups: Vec<u32> = journal.group_status().iter().map(|s| s.group).filter(|g| *g < shard_groups).collect();
    if let Some(why) = crate::storage::backup::partial_holding(groups.len(), shard_groups) {
        return Err(why);
    }
    // A group between leaders is waited for, up to the request timeout.
    let deadline = tokio::time::Instant::now() + state.config.gateway.request_timeout;
    let mut waiting = groups;
    while !waiting.is_empty() {
        let barriers = futures_util::future::join_all(waiting.iter().map(|&g| journal.read_index(g))).await;
        let failed: Vec<(u32, crate::storage::StoreError)> = waiting.iter().zip(barriers).filter_map(|(&g, r)| r.err().map(|e| (g, e))).collect();
        if let Some((g, e)) = failed.first() {
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("shard group {g} cannot be brought up to date for the backup: {e}"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        waiting = failed.into_iter().map(|(g, _)| g).collect();
    }
    let digest = state
        .router
        .journal()
        .exclusive(move |store| crate::storage::backup::write_backup_file(store, &keys_dir, &key, &out))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    tracing::info!(%digest, "backup written");
    Ok(digest)
}

/// Writes the anonymised analytics export (consenting investors only) and audits it.
pub async fn analytics_export(state: &AppState, out: PathBuf) -> Result<crate::analytics::ExportSummary, String> {
    let store = state.router.store().clone();
    let vault = state.vault.clone();
    let keys_dir = state.config.security.secrets_path(&state.config.node.data_dir);
    let summary = tokio::task::spawn_blocking(move || {
        let key = crate::analytics::load_or_create_key(&keys_dir)?;
        crate::analytics::export(&store, &vault, &key, &out, crate::actors::wall_clock_now())
    })
    .await
    .map_err(|e| e.to_string())??;
    let draft = crate::domain::audit::AuditDraft::ok("gdpr.analytics_export")
        .detail("investors", summary.investors)
        .detail("excluded_without_consent", summary.excluded_without_consent)
        .detail("orders", summary.orders);
    state
        .router
        .audit(draft, "analytics", &crate::actors::RequestMeta::system("analytics-export"), true)
        .await?;
    Ok(summary)
}

/// Carries out one request (for the socket, and for the CLI when the node is stopped).
pub async fn handle(state: &AppState, request: Request) -> Result<Response, String> {
    let counts = |c: (usize, usize, usize)| Response {
        ok: true,
        digest: None,
        counts: Some(c),
        error: None,
        json: None,
    };
    match request {
        Request::Backup { out } => backup(state, out).await.map(|digest| Response {
            ok: true,
            digest: Some(digest),
            counts: None,
            error: None,
            json: None,
        }),
        Request::StaffAdd {
            email,
            role,
            full_name,
            password,
        } => {
            let role = crate::domain::account::Role::parse(&role)
                .filter(|r| r.is_staff())
                .ok_or("the role must be support, compliance or admin")?;
            let hash = state.auth.hash_password(password).await.map_err(|_| "password hashing failed".to_string())?;
            let profile = crate::domain::account::Profile {
                email,
                full_name,
                date_of_birth: None,
                country: None,
            };
            let uid = crate::workflows::registration::create_account(
                state,
                profile,
                hash,
                vec![role],
                &crate::actors::RequestMeta::system("cli-staff-add").request_id,
            )
            .await
            .map_err(|e| match e {
                crate::workflows::registration::RegistrationError::EmailTaken => "an account with this email already exists".to_string(),
                e => format!("could not create the account: {e}"),
            })?;
            Ok(Response {
                ok: true,
                digest: Some(uid),
                counts: None,
                error: None,
                json: None,
            })
        }
        Request::CutLinks { node_ids } => {
            if !state.config.cluster.test_faults {
                return Err("fault injection is off (test-only: [cluster] test_faults)".into());
            }
            state.router.cut_links(&node_ids)?;
            tracing::warn!(cut = ?node_ids, "test fault: links to these members are cut");
            Ok(Response {
                ok: true,
                digest: None,
                counts: None,
                error: None,
                json: None,
            })
        }
        Request::Decommission { node_id } => {
            let meta = crate::actors::RequestMeta::system("operator");
            crate::cluster::coordinator::decommission(&state.router, &node_id, &meta)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Response {
                ok: true,
                digest: None,
                counts: None,
                error: None,
                json: None,
            })
        }
        Request::ClusterStatus => Ok(Response {
            ok: true,
            digest: None,
            counts: None,
            error: None,
            json: Some(serde_json::to_string(&state.router.cluster_view(&state.node_id)).map_err(|e| e.to_string())?),
        }),
        Request::AnalyticsExport { out } => analytics_export(state, out)
            .await
            .map(|s| counts((s.investors, s.excluded_without_consent, s.orders))),
        Request::EndOfDay { date } => {
            let date = match date {
                Some(d) => crate::domain::time::Date::parse(&d).ok_or_else(|| format!("{d} is not a date (YYYY-MM-DD)"))?,
                None => crate::workflows::end_of_day::due_date(state),
            };
            if date > crate::domain::time::Date::from_timestamp(crate::actors::wall_clock_now()) {
                return Err(format!("cannot close {date}: the day has not begun"));
            }
            let s = crate::workflows::end_of_day::close_day(state, date, &Groups::All).await?;
            Ok(counts((s.statements, s.already_closed + s.nothing_to_state, s.failed)))
        }
        Request::Reconcile => {
            let s = crate::workflows::reconcile::reconcile_now(state, &Groups::All).await?;
            Ok(counts((s.orders, s.discrepancies, s.alerted)))
        }
    }
}

fn answer(r: Result<Response, String>) -> Response {
    r.unwrap_or_else(|e| Response {
        ok: false,
        digest: None,
        counts: None,
        error: Some(e),
        json: None,
    })
}

#[cfg(unix)]
pub async fn serve(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(&state.config.node.data_dir);
    // A socket left by a killed node: we hold the data folder's lock, so it is stale.
    let _ = std::fs::remove_file(&path);
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            // The node serves without it; `moneta backup create` then needs the node stopped.
            let msg = format!("control socket {}: {e}", path.display());
            tracing::warn!(error = %msg, "the control socket is not available");
            return Err(msg);
        }
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|e| format!("control socket {}: {e}", path.display()))?;
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = stop.changed() => break,
        };
        let Ok((stream, _)) = conn else { continue };
        let state = state.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
            let response = answer(
                async {
                    reader.read_line(&mut line).await.map_err(|e| e.to_string())?;
                    let request = serde_json::from_str::<Request>(&line).map_err(|e| format!("bad request: {e}"))?;
                    handle(&state, request).await
                }
                .await,
            );
            let mut bytes = serde_json::to_vec(&response).unwrap_or_default();
            bytes.push(b'\n');
            let _ = write.write_all(&bytes).await;
        });
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

#[cfg(not(unix))]
pub async fn serve(_state: Arc<AppState>, _stop: tokio::sync::watch::Receiver<bool>) -> Result<(), String> {
    Ok(())
}

/// Sends one request to a running node's control socket.
#[cfg(unix)]
pub fn call(data_dir: &Path, request: &Request) -> Result<Response, String> {
    use std::io::{BufRead, Write};
    let path = socket_path(data_dir);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).map_err(|e| format!("cannot reach the running node at {}: {e}", path.display()))?;
    // A node that is frozen (stopped with SIGSTOP, swapping) takes the connection and never
    // answers: every call is bounded, a long job by more.
    let within = answer_within(request);
    let silent = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
            "the running node at {} did not answer within {} s (is it stopped or overloaded?)",
            path.display(),
            within.as_secs()
        ),
        _ => e.to_string(),
    };
    stream.set_write_timeout(Some(CALL_WRITE_TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(within)).map_err(|e| e.to_string())?;
    let mut bytes = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    stream.write_all(&bytes).map_err(silent)?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line).map_err(silent)?;
    serde_json::from_str(&line).map_err(|e| format!("unexpected answer from the node: {e}"))
}

/// How long a request to the running node may take to be sent.
#[cfg(unix)]
const CALL_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long the CLI waits for the running node's answer: a question is answered at once; a
/// job (a backup, a day's close, an export) runs first.
#[cfg(unix)]
fn answer_within(request: &Request) -> std::time::Duration {
    match request {
        Request::Backup { .. } | Request::AnalyticsExport { .. } | Request::EndOfDay { .. } | Request::Reconcile => std::time::Duration::from_secs(30 * 60),
        _ => std::time::Duration::from_secs(60),
    }
}

#[cfg(not(unix))]
pub fn call(_data_dir: &Path, _request: &Request) -> Result<Response, String> {
    Err("the control socket needs a Unix system".into())
}
