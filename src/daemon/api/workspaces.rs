//! The workspace routes: list, show, delete, upload and download files.

use super::*;

/// `GET /workspaces`.
pub(super) async fn list_workspaces(State(d): Shared, headers: HeaderMap) -> Answer {
    let tenant = caller(&d, &headers)?;
    let dirs = d.dirs(&tenant);
    let list: Vec<Value> = dirs
        .workspace_ids()
        .iter()
        .map(|id| json!({"id": id, "files": dirs.manifest(id).len()}))
        .collect();
    Ok(Json(json!(list)))
}

pub(super) fn existing_workspace(
    d: &Daemon,
    tenant: &Tenant,
    ws: &str,
) -> Answer<crate::daemon::workspace::TenantDirs> {
    check_workspace_id(ws)?;
    let dirs = d.dirs(tenant);
    if !dirs.workspace(ws).is_dir() {
        return Err(ApiError::not_found(format!("no workspace `{ws}`")));
    }
    Ok(dirs)
}

/// `GET /workspaces/{ws}`: its files with their digests, its state's size.
pub(super) async fn show_workspace(
    State(d): Shared,
    headers: HeaderMap,
    Path(ws): Path<String>,
) -> Answer {
    let tenant = caller(&d, &headers)?;
    let dirs = existing_workspace(&d, &tenant, &ws)?;
    let files = dirs.manifest(&ws);
    let state = ["state", "objects"].iter().fold(0u64, |total, part| {
        total.saturating_add(crate::daemon::workspace::dir_size(
            &dirs.workspace(&ws).join(part),
        ))
    });
    Ok(Json(
        json!({"id": ws, "files": files, "state_bytes": state, "in_use_by": d.workspace_in_use(&tenant, &ws)}),
    ))
}

/// `DELETE /workspaces/{ws}`: refused while a live Pea or Pod uses it.
pub(super) async fn delete_workspace(
    State(d): Shared,
    headers: HeaderMap,
    Path(ws): Path<String>,
) -> Answer {
    let tenant = caller(&d, &headers)?;
    let dirs = existing_workspace(&d, &tenant, &ws)?;
    if let Some(id) = d.workspace_in_use(&tenant, &ws) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("workspace `{ws}` is used by `{id}`: delete that first"),
        ));
    }
    let _guard = d.upload_lock(&tenant).lock_owned().await;
    dirs.remove(&ws)
        .map_err(|e| ApiError::internal(format!("cannot delete workspace `{ws}`: {e}")))?;
    Ok(Json(json!({"deleted": ws, "disk": dirs.disk_usage()})))
}

/// `POST /workspaces/{ws}/files`: multipart; each part's file name (else its
/// field name) is the name in the workspace. Creates the workspace.
pub(super) async fn upload(
    State(d): Shared,
    headers: HeaderMap,
    Path(ws): Path<String>,
    mut multipart: Multipart,
) -> Answer {
    let answer = receive(&d, &headers, &ws, &mut multipart).await;
    if answer.is_err() {
        drain(&mut multipart).await;
    }
    answer
}

/// What a refused upload may still send before its answer, read and thrown
/// away (a "lingering close"): a client that is still writing its body when
/// the refusal comes gets the refusal (401, 413 with its reason) instead of
/// a broken connection. Bounded in bytes and time, so a refused client cannot
/// make the daemon read more than this.
pub(super) const DRAIN_BYTES: u64 = 16 << 20;
pub(super) const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

pub(super) async fn drain(multipart: &mut Multipart) {
    let read = async {
        let mut left = DRAIN_BYTES;
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(chunk)) = field.chunk().await {
                left = left.saturating_sub(chunk.len() as u64);
                if left == 0 {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, read).await;
}

pub(super) async fn receive(
    d: &Daemon,
    headers: &HeaderMap,
    ws: &str,
    multipart: &mut Multipart,
) -> Answer {
    let (d, ws) = (d, ws.to_string());
    let tenant = caller(d, headers)?;
    check_workspace_id(&ws)?;
    let dirs = d.dirs(&tenant);
    // One upload per tenant at a time, so two cannot both fit the quota's last bytes.
    let _guard = d.upload_lock(&tenant).lock_owned().await;
    let used = dirs.disk_usage();
    let (limit, quota) = (d.config.max_upload, tenant.quota.disk);
    let mut received = 0u64;
    let mut files = dirs.file_count();
    let mut stored = Vec::new();
    loop {
        let field = multipart.next_field().await.map_err(|e| {
            ApiError(
                e.status(),
                format!("the upload is not valid multipart: {}", e.body_text()),
            )
        })?;
        let Some(mut field) = field else { break };
        // A file name given but not read (not UTF-8, or RFC 5987's
        // `filename*=`) must not fall back to the field's name: the client
        // would be told its file is stored under a name it did not give.
        let disposition = field
            .headers()
            .get(axum::http::header::CONTENT_DISPOSITION)
            .map(|v| v.as_bytes().to_ascii_lowercase());
        if field.file_name().is_none()
            && disposition.is_some_and(|d| d.windows(8).any(|w| w == b"filename"))
        {
            return Err(ApiError::bad(
                "a part's file name is not plain UTF-8 text in `filename=\"...\"` (`filename*=` is not read): name the file in UTF-8",
            ));
        }
        let Some(name) = field.file_name().or(field.name()).map(str::to_string) else {
            return Err(ApiError::bad(
                "a part has neither a file name nor a field name",
            ));
        };
        let relative = safe_relative(&name).map_err(ApiError::bad)?;
        let new = !dirs
            .manifest(&ws)
            .contains_key(relative.to_string_lossy().as_ref());
        if new && files >= tenant.quota.files {
            return Err(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "file quota: tenant `{}` has {files} of {} files; `{name}` does not fit",
                    tenant.name, tenant.quota.files
                ),
            ));
        }
        let mut file = Receiving::new(&dirs.tmp())
            .map_err(|e| ApiError::internal(format!("cannot receive `{name}`: {e}")))?;
        let too_large = |why: String| ApiError(StatusCode::PAYLOAD_TOO_LARGE, why);
        loop {
            let chunk = match field.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    file.discard();
                    return Err(ApiError(e.status(), format!("`{name}`: {}", e.body_text())));
                }
            };
            let size = file.size + chunk.len() as u64;
            if size > limit {
                file.discard();
                return Err(too_large(format!(
                    "file `{name}` is larger than the daemon's limit of {} per file (--max-upload)",
                    format_size(limit)
                )));
            }
            if used.saturating_add(received).saturating_add(size) > quota {
                file.discard();
                return Err(too_large(format!(
                    "disk quota: tenant `{}` uses {} of {}; `{name}` does not fit",
                    tenant.name,
                    format_size(used.saturating_add(received)),
                    format_size(quota)
                )));
            }
            if let Err(e) = file.write(&chunk) {
                file.discard();
                return Err(ApiError::internal(format!("cannot store `{name}`: {e}")));
            }
        }
        received += file.size;
        let (tmp, sha, size) = file
            .finish()
            .map_err(|e| ApiError::internal(format!("cannot store `{name}`: {e}")))?;
        let entry = dirs.commit(&ws, &name, &tmp, &sha, size).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            ApiError::bad(e)
        })?;
        files += u64::from(new);
        stored.push(json!({"name": name, "sha256": entry.sha256, "size": entry.size}));
    }
    if stored.is_empty() {
        return Err(ApiError::bad("the upload has no files"));
    }
    tracing::info!(tenant = %tenant.name, workspace = %ws, files = stored.len(), "uploaded");
    Ok(Json(
        json!({"workspace": ws, "files": stored, "disk": dirs.disk_usage()}),
    ))
}

/// `GET /workspaces/{ws}/files/{name}`: the file's bytes.
pub(super) async fn download(
    State(d): Shared,
    headers: HeaderMap,
    Path((ws, name)): Path<(String, String)>,
) -> Answer<Vec<u8>> {
    let tenant = caller(&d, &headers)?;
    let dirs = existing_workspace(&d, &tenant, &ws)?;
    let mut file = dirs.open_file(&ws, &name).map_err(ApiError::not_found)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes)
        .map_err(|e| ApiError::internal(format!("cannot read `{name}`: {e}")))?;
    Ok(bytes)
}
