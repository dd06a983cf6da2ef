//! The routes of Peas, Pods and Flows: list, create, show, remove, renew.

use super::*;

pub(super) fn unknown(kind: Kind, id: &str) -> ApiError {
    ApiError::not_found(format!("no {} `{id}`", kind.command()))
}

/// Runs `f` on the tenant's object `id` of kind `kind`.
pub(super) fn with_object<R>(
    d: &Daemon,
    tenant: &Tenant,
    kind: Kind,
    id: &str,
    f: impl FnOnce(&mut Object) -> R,
) -> Answer<R> {
    d.with_objects(tenant, |objects| match objects.get_mut(id) {
        Some(object) if object.kind == kind => Ok(f(object)),
        _ => Err(unknown(kind, id)),
    })
}

/// `GET /pods`, `GET /peas`.
pub(super) async fn list(kind: Kind, State(d): Shared, headers: HeaderMap) -> Answer {
    let tenant = caller(&d, &headers)?;
    let list: Vec<Value> = d.with_objects(&tenant, |objects| {
        objects
            .values()
            .filter(|o| o.kind == kind)
            .map(Object::describe)
            .collect()
    });
    Ok(Json(json!(list)))
}

/// `POST /pods`, `POST /peas`, `POST /flows`: checks the request and the quota, starts the
/// process, answers once it is ready (201) or why it did not start (422).
pub(super) async fn create(
    kind: Kind,
    State(d): Shared,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tenant = caller(&d, &headers)?;
    let what = kind.command();
    let request: CreateRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("the body is not a {what} request: {e}")))?;
    check_workspace_id(&request.workspace)?;
    let ws = &request.workspace;
    let dirs = existing_workspace(&d, &tenant, ws)?;
    let id = format!("{what}-{}", &random_id()[..12]);
    let log = dirs.logs().join(format!("{id}.log"));
    // The object's own state, unless the tenant names one: never another's.
    let state: Option<(std::path::PathBuf, bool)> = match &request.state {
        None | Some(StateRequest::Own(false)) => None,
        Some(StateRequest::Own(true)) => Some((
            std::path::Path::new("workspaces")
                .join(ws)
                .join("objects")
                .join(&id),
            true,
        )),
        Some(StateRequest::Named(name)) => Some((
            std::path::Path::new("workspaces")
                .join(ws)
                .join("state")
                .join(name),
            false,
        )),
    };
    std::fs::create_dir_all(dirs.logs())
        .map_err(|e| ApiError::internal(format!("cannot create {}: {e}", dirs.logs().display())))?;
    // The named states there are before this request: a refused request
    // removes the state directory it made, never one that was there.
    let states = std::path::Path::new("workspaces").join(ws).join("state");
    let states_before: std::collections::HashSet<std::ffi::OsString> =
        std::fs::read_dir(dirs.root.join(&states))
            .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
    let (plan, args) = match kind {
        Kind::Flow => {
            let file = dirs.root.join("flows").join(format!("{id}.yml"));
            let plan =
                crate::daemon::flows::prepare(&request, &dirs, &tenant, &d.config.host, &file)
                    .map_err(ApiError::bad)?;
            let mut args: Vec<String> =
                vec!["flow".into(), "--uses".into(), file.display().to_string()];
            args.extend([
                "--host".into(),
                d.config.host.clone(),
                "--port".into(),
                "0".into(),
            ]);
            args.extend([
                "--cache-dir".into(),
                d.config.cache_dir.display().to_string(),
            ]);
            (plan, args)
        }
        Kind::Pea | Kind::Pod => {
            let plan = request.plan(kind, &tenant.quota).map_err(ApiError::bad)?;
            let file = |name: &str| dirs.file(ws, name).map_err(ApiError::bad);
            let files = Files {
                uses: file(&request.uses())?,
                uses_before: (request.pod.uses_before.as_deref())
                    .map(|p| file(&p.to_string_lossy()))
                    .transpose()?,
                uses_after: (request.pod.uses_after.as_deref())
                    .map(|p| file(&p.to_string_lossy()))
                    .transpose()?,
            };
            // Checked beneath the tenant's root now, just before the process gets it.
            let state_dir = match &state {
                Some((relative, _)) => Some(
                    dirs.beneath(relative)
                        .map_err(|e| ApiError::bad(format!("state: {e}")))?,
                ),
                None => None,
            };
            let config = request
                .pod_config(&plan, &d.config.host, &files, state_dir.as_deref())
                .map_err(ApiError::bad)?;
            (
                plan,
                CreateRequest::args(kind, &config, &d.config.cache_dir),
            )
        }
    };
    // A Flow's Pods keep their state under `state/<flow name>/` (flows.rs): a
    // named state like any other, so it too has one live user at a time (not
    // a second Flow of that name, nor a Pea or Pod given that state).
    let state = match kind {
        Kind::Flow => Some((
            std::path::Path::new("workspaces")
                .join(ws)
                .join("state")
                .join(&plan.name),
            false,
        )),
        Kind::Pea | Kind::Pod => state,
    };
    // What a request refused from here on made (found by a hostile test: a
    // Flow refused by the quota left its Flow file and an empty state tree).
    let undo = || {
        if kind == Kind::Flow {
            let _ = std::fs::remove_file(dirs.root.join("flows").join(format!("{id}.yml")));
        }
        if let Some((relative, _)) = &state {
            let made = match relative.strip_prefix(&states) {
                Ok(rest) => rest
                    .components()
                    .next()
                    .is_some_and(|c| !states_before.contains(c.as_os_str())),
                // `objects/<id>`: this request's own.
                Err(_) => true,
            };
            if made {
                remove_empty_dirs(&dirs.root.join(relative));
            }
        }
    };
    let quota = &tenant.quota;
    let refuse = |m: String| {
        undo();
        ApiError(
            StatusCode::FORBIDDEN,
            format!("quota: tenant `{}`: {m}", tenant.name),
        )
    };
    if plan.memory_per_pea > quota.memory_per_pea {
        return Err(refuse(format!(
            "memory_hwm {} is more than memory_per_pea {}",
            format_size(plan.memory_per_pea),
            format_size(quota.memory_per_pea)
        )));
    }
    // The sandbox's other limits a request may set (bounds.rs says why each).
    if kind != Kind::Flow {
        let limits = (plan.disk_quota, plan.max_files);
        match crate::daemon::bounds::over_bound(&request.pod, limits, quota) {
            Ok(None) => {}
            Ok(Some(over)) => return Err(refuse(over)),
            Err(e) => {
                undo();
                return Err(ApiError::bad(e));
            }
        }
    }
    let live = Arc::new(Mutex::new(Live {
        state: LiveState::Starting,
        pid: None,
        ready: Value::Null,
        exit: None,
    }));
    let stop = CancellationToken::new();
    // Admission: the Peas and memory of every live object, this one reserved
    // before it starts so that concurrent creations cannot overrun the quota.
    d.with_objects(&tenant, |objects| {
        if let Some((dir, false)) = &state
            && let Some(other) = objects
                .values()
                .find(|o| o.holds_resources() && o.state.as_ref().is_some_and(|(d, _)| d == dir))
        {
            undo();
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "state `{}` is used by {} `{}`: a named state has one live user at a time",
                    dir.display(),
                    other.kind.command(),
                    other.id
                ),
            ));
        }
        let (peas, memory) = Daemon::usage(objects);
        if peas.saturating_add(plan.peas) > quota.max_peas {
            return Err(refuse(format!(
                "{what} `{}` needs {} Peas; {peas} of max_peas {} are running",
                plan.name, plan.peas, quota.max_peas
            )));
        }
        if memory.saturating_add(plan.memory) > quota.total_memory {
            return Err(refuse(format!(
                "{what} `{}` needs {} for {} Peas; {} of total_memory {} is taken",
                plan.name,
                format_size(plan.memory),
                plan.peas,
                format_size(memory),
                format_size(quota.total_memory)
            )));
        }
        let object = Object {
            id: id.clone(),
            kind,
            name: plan.name.clone(),
            workspace: ws.clone(),
            plan: plan.clone(),
            created: std::time::SystemTime::now(),
            expires: None,
            log: log.clone(),
            state: state.clone(),
            live: live.clone(),
            stop: stop.clone(),
            supervisor: None,
        };
        objects.insert(id.clone(), object);
        Ok(())
    })?;
    tracing::info!(tenant = %tenant.name, %id, name = %plan.name, "starting");
    match crate::daemon::child::spawn(
        &d.config.exe,
        &args,
        &log,
        plan.timeout_ready,
        live,
        stop.clone(),
        d.config.max_log,
    )
    .await
    {
        Ok(task) => {
            let described = d.with_objects(&tenant, |objects| {
                objects.get_mut(&id).map(|object| {
                    object.supervisor = Some(task);
                    object.renew();
                    object.describe()
                })
            });
            match described {
                Some(described) => Ok((StatusCode::CREATED, Json(described))),
                None => {
                    // Deleted while it started: the delete could not stop it yet.
                    stop.cancel();
                    Err(ApiError(
                        StatusCode::CONFLICT,
                        format!("{what} `{id}` was deleted while it started"),
                    ))
                }
            }
        }
        Err(e) => {
            if let Some(object) = d.with_objects(&tenant, |objects| objects.remove(&id)) {
                d.forget(&tenant.name, &object);
            }
            Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{what} `{}` did not start: {e:#}", plan.name),
            ))
        }
    }
}

/// `GET /pods/{id}`: the object, and its live STATUS while it runs.
pub(super) async fn show(
    kind: Kind,
    State(d): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let tenant = caller(&d, &headers)?;
    let (mut described, ctrl) = with_object(&d, &tenant, kind, &id, |o| {
        let live = o.live.lock().expect("live");
        let ctrl = live.ready["ctrl"]
            .as_str()
            .filter(|c| live.state == LiveState::Running && !c.is_empty())
            .map(str::to_string);
        drop(live);
        (o.describe(), ctrl)
    })?;
    if let Some(ctrl) = ctrl {
        let wait = Duration::from_secs(2);
        described["status"] =
            match crate::control::ask_within(&ctrl, crate::control::Command::Status, wait).await {
                Ok(status) => status,
                Err(e) => json!({"healthy": false, "error": format!("{e:#}")}),
            };
    }
    Ok(Json(described))
}

/// `DELETE /pods/{id}`: stops it (TERMINATE: it finishes, dumps, closes) and forgets it.
pub(super) async fn remove(
    kind: Kind,
    State(d): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let tenant = caller(&d, &headers)?;
    with_object(&d, &tenant, kind, &id, |_| ())?;
    if !d.delete(&tenant.name, &id).await {
        return Err(unknown(kind, &id));
    }
    Ok(Json(json!({"deleted": id})))
}

/// `PUT /pods/{id}/lease`: the lease starts again.
pub(super) async fn renew(
    kind: Kind,
    State(d): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let tenant = caller(&d, &headers)?;
    let expires = with_object(&d, &tenant, kind, &id, |o| {
        o.renew();
        o.expires.map(|e| {
            e.saturating_duration_since(std::time::Instant::now())
                .as_millis() as u64
        })
    })?;
    match expires {
        Some(ms) => Ok(Json(json!({"id": id, "expires_in_ms": ms}))),
        None => Err(ApiError::bad(format!(
            "{} `{id}` has no lease (create it with `lease`)",
            kind.command()
        ))),
    }
}

/// Removes `dir` and the directories under it when none of them holds
/// anything else (a file, a link, which stay, and so do the directories above
/// them): what a refused request made, and nothing of anyone's data.
pub(super) fn remove_empty_dirs(dir: &std::path::Path) -> bool {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        _ => return false,
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut empty = true;
    for entry in entries.flatten() {
        empty &= remove_empty_dirs(&entry.path());
    }
    empty && std::fs::remove_dir(dir).is_ok()
}
